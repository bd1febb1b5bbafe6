#include "core/auth.h"

#include <grpc/grpc_security_constants.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <array>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kennel::core {
namespace {

// The one table: each RPC's short name and the roles that may call it.
const std::map<std::string, std::set<std::string>, std::less<>>& Table() {
  static const auto* table = new std::map<std::string, std::set<std::string>, std::less<>>{
      // kennel.v1.Coordinator: members (an admin imports and downloads models too).
      {"TrainerControl", {"member"}},
      {"StoreSet", {"member"}},
      {"StoreGet", {"member"}},
      {"UploadArtifact", {"member", "admin"}},
      {"DownloadArtifact", {"member", "admin"}},
      // kennel.v1.Admin.
      {"GetClusterStatus", {"admin", "viewer"}},
      {"ListJobs", {"admin", "viewer"}},
      {"GetJob", {"admin", "viewer"}},
      {"WatchJob", {"admin", "viewer"}},
      {"ListModels", {"admin", "viewer"}},
      {"SubmitJob", {"admin"}},
      {"CancelJob", {"admin"}},
      {"ResumeJob", {"admin"}},
      {"Deploy", {"admin"}},
      {"GetTuning", {"admin", "viewer"}},
      {"ListTunings", {"admin", "viewer"}},
      {"SubmitTuning", {"admin"}},
      {"CancelTuning", {"admin"}},
      {"SetAutoscale", {"admin"}},
      {"GetAutoscale", {"admin", "viewer"}},
      {"WatchEndpoints", {"client", "admin", "viewer"}},
      // kennel.v1.Inference.
      {"Classify", {"client", "admin"}},
      {"ClassifyStream", {"client", "admin"}},
      {"GetModelInfo", {"client", "admin", "viewer"}},
      {"GetServingStats", {"admin", "viewer"}},
  };
  return *table;
}

// The organizational unit of a certificate ("" when it has none or does not parse).
std::string ParseRole(absl::string_view pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                                &BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), &X509_free);
  char unit[64] = {0};
  if (!cert || X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_organizationalUnitName, unit,
                                         sizeof(unit)) <= 0) {
    return "";
  }
  return unit;
}

// The role in the peer's verified certificate. Parsing it costs tens of microseconds, on
// every call; the certificates a server sees are few, so each thread keeps the roles of the
// last ones it parsed (a certificate's role never changes).
std::string RoleOf(const grpc::AuthContext& auth) {
  const auto pems = auth.FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pems.empty()) return "";
  const absl::string_view pem(pems.front().data(), pems.front().size());
  struct Parsed {
    std::string pem;
    std::string role;
  };
  thread_local std::array<Parsed, 8> cache;
  thread_local size_t next = 0;
  for (const auto& entry : cache) {
    if (entry.pem == pem) return entry.role;
  }
  Parsed& slot = cache[next++ % cache.size()];
  slot = {std::string(pem), ParseRole(pem)};
  return slot.role;
}

}  // namespace

Caller CallerOf(const grpc::ServerContextBase& context, bool enforce) {
  if (!enforce) return {.name = "anonymous", .role = "any"};
  const auto auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return {.name = "", .role = ""};
  const auto names = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
  return {.name = names.empty() ? "" : std::string(names.front().data(), names.front().size()), .role = RoleOf(*auth)};
}

grpc::Status Authorize(const grpc::ServerContextBase& context, bool enforce, absl::string_view method) {
  if (!enforce) return grpc::Status::OK;
  const auto& table = Table();
  auto it = table.find(method);
  if (it == table.end()) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, absl::StrCat(method, " is in no role's table"));
  }
  const Caller caller = CallerOf(context, enforce);
  if (caller.name.empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "a certificate from the cluster's CA is required");
  }
  if (it->second.contains(caller.role)) return grpc::Status::OK;
  return grpc::Status(
      grpc::StatusCode::PERMISSION_DENIED,
      absl::StrCat("'", caller.name, "' ",
                   caller.role.empty() ? "has a certificate with no Kennel role (issue one with `kennelctl certs issue --role`)"
                                       : absl::StrCat("(role ", caller.role, ")"),
                   " may not call ", method, ": it needs the ", absl::StrJoin(it->second, " or "), " role"));
}

}  // namespace kennel::core
