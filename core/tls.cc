#include "core/tls.h"

#include <arpa/inet.h>
#include <grpc/grpc_security_constants.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/auth.h"
#include "core/files.h"
#include "core/status_macros.h"

namespace kennel::core {
namespace {

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;

Bio MemoryBio(const std::string& pem) { return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))); }

std::string BioString(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

// Reads `path` (flag `flag`) and checks it holds PEM of `kind` ("certificate", "private key").
absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path, bool key) {
  auto pem = ReadFile(path);
  if (!pem.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", pem.status().message()));
  }
  Bio bio = MemoryBio(*pem);
  const bool parsed = key ? Key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)) != nullptr
                          : Cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) != nullptr;
  if (!parsed) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, " holds no PEM ", key ? "private key" : "certificate"));
  }
  return pem;
}

absl::Status CheckPair(const TlsFiles& f, const std::string& who) {
  if (f.cert.empty() != f.key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(who, " needs both a certificate and its key (--tls_cert and --tls_key)"));
  }
  return absl::OkStatus();
}

Key NewKey() { return Key(EVP_EC_gen("P-256")); }

absl::Status OpenSslError(const std::string& what) { return absl::InternalError(absl::StrCat(what, " failed (OpenSSL)")); }

// A certificate for `subject` with `key`'s public half, signed by `issuer_key` (as `issuer`,
// or self-signed when null).
absl::StatusOr<Cert> NewCertificate(const std::string& subject, const std::string& unit, EVP_PKEY* key, X509* issuer,
                                    EVP_PKEY* issuer_key, absl::Duration valid,
                                    const std::vector<std::pair<int, std::string>>& extensions) {
  Cert cert(X509_new());
  if (!cert) return OpenSslError("X509_new");
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return OpenSslError("RAND_bytes");
  serial[0] &= 0x7f;  // Positive.
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);  // Tolerates some clock skew.
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(absl::ToInt64Seconds(valid)));
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("Kennel"), -1, -1, 0);
  if (!unit.empty()) {
    X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(unit.c_str()), -1, -1, 0);
  }
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(subject.c_str()),
                                 -1, -1, 0) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("'", subject, "' cannot be a certificate's common name"));
  }
  X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : extensions) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (ext == nullptr) return absl::InvalidArgumentError(absl::StrCat("bad certificate extension value '", value, "'"));
    X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) return OpenSslError("X509_sign");
  return cert;
}

absl::StatusOr<Pem> ToPem(X509* cert, EVP_PKEY* key) {
  Bio c(BIO_new(BIO_s_mem())), k(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(c.get(), cert) != 1 ||
      PEM_write_bio_PrivateKey(k.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("writing PEM");
  }
  return Pem{.cert = BioString(c.get()), .key = BioString(k.get())};
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& files) {
  if (!files.enabled()) return grpc::InsecureServerCredentials();
  RETURN_IF_ERROR(CheckPair(files, "a TLS server"));
  if (files.cert.empty()) return absl::InvalidArgumentError("a TLS server needs --tls_cert and --tls_key");
  grpc::SslServerCredentialsOptions options(files.ca.empty()
                                                ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!files.ca.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem("--tls_ca", files.ca, false));
  }
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("--tls_cert", files.cert, false));
  ASSIGN_OR_RETURN(pair.private_key, ReadPem("--tls_key", files.key, true));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& files) {
  if (!files.enabled()) return grpc::InsecureChannelCredentials();
  RETURN_IF_ERROR(CheckPair(files, "a TLS client"));
  if (files.ca.empty()) return absl::InvalidArgumentError("TLS needs the cluster's CA certificate (--tls_ca) to verify the server");
  grpc::SslCredentialsOptions options;
  ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem("--tls_ca", files.ca, false));
  if (!files.cert.empty()) {
    ASSIGN_OR_RETURN(options.pem_cert_chain, ReadPem("--tls_cert", files.cert, false));
    ASSIGN_OR_RETURN(options.pem_private_key, ReadPem("--tls_key", files.key, true));
  }
  return grpc::SslCredentials(options);
}

std::optional<std::string> VerifiedPeerName(const grpc::ServerContextBase& context) {
  const auto auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return std::nullopt;
  const auto names = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
  if (names.empty()) return std::nullopt;
  return std::string(names.front().data(), names.front().size());
}

TlsFiles TlsFilesFromEnvironment() {
  auto get = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v != nullptr ? v : "");
  };
  return TlsFiles{.ca = get("KENNEL_TLS_CA"), .cert = get("KENNEL_TLS_CERT"), .key = get("KENNEL_TLS_KEY")};
}

absl::StatusOr<std::string> CertificateName(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string pem, ReadPem("--tls_cert", path, false));
  Bio bio = MemoryBio(pem);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  char name[256] = {0};
  if (!cert || X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, name, sizeof(name)) <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_cert ", path, " has no common name"));
  }
  return std::string(name);
}

bool IsLoopbackAddress(const std::string& host_port) {
  absl::string_view host = host_port;
  const size_t colon = host.rfind(':');
  if (colon != absl::string_view::npos) host = host.substr(0, colon);
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  if (host == "localhost" || host == "::1") return true;
  in_addr v4{};
  const std::string h(host);
  return inet_pton(AF_INET, h.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

absl::StatusOr<Pem> CreateCa(const std::string& name, absl::Duration valid) {
  Key key = NewKey();
  if (!key) return OpenSslError("generating a key");
  ASSIGN_OR_RETURN(Cert cert, NewCertificate(name, "", key.get(), nullptr, key.get(), valid,
                                             {{NID_basic_constraints, "critical,CA:TRUE"},
                                              {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                              {NID_subject_key_identifier, "hash"}}));
  return ToPem(cert.get(), key.get());
}

absl::StatusOr<Pem> IssueCertificate(const Pem& ca, const std::string& name, const std::string& role,
                                     const std::vector<std::string>& hosts, absl::Duration valid) {
  if (name.empty()) return absl::InvalidArgumentError("a certificate needs a name");
  if (std::find(std::begin(kRoles), std::end(kRoles), role) == std::end(kRoles)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", role, "' is not a role: member, admin, viewer or client"));
  }
  Bio cb = MemoryBio(ca.cert), kb = MemoryBio(ca.key);
  Cert ca_cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  Key ca_key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!ca_cert || !ca_key) return absl::InvalidArgumentError("the CA certificate or key is not PEM");
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    return absl::InvalidArgumentError("the CA key does not belong to the CA certificate");
  }
  std::string san = absl::StrCat("DNS:", name);
  for (const auto& h : hosts) {
    in_addr v4{};
    in6_addr v6{};
    const bool ip = inet_pton(AF_INET, h.c_str(), &v4) == 1 || inet_pton(AF_INET6, h.c_str(), &v6) == 1;
    if (h.empty() || (!ip && h.find_first_of(",: /") != std::string::npos)) {
      return absl::InvalidArgumentError(absl::StrCat("'", h, "' is neither an IP address nor a host name"));
    }
    absl::StrAppend(&san, ",", ip ? "IP:" : "DNS:", h);
  }
  Key key = NewKey();
  if (!key) return OpenSslError("generating a key");
  ASSIGN_OR_RETURN(Cert cert, NewCertificate(name, role, key.get(), ca_cert.get(), ca_key.get(), valid,
                                             {{NID_basic_constraints, "critical,CA:FALSE"},
                                              {NID_key_usage, "critical,digitalSignature,keyEncipherment"},
                                              {NID_ext_key_usage, "serverAuth,clientAuth"},
                                              {NID_subject_alt_name, san},
                                              {NID_authority_key_identifier, "keyid"}}));
  return ToPem(cert.get(), key.get());
}

}  // namespace kennel::core
