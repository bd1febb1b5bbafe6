#include "cli/client.h"

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"
#include "core/member/coordinator_client.h"
#include "core/tls.h"

namespace kennel::cli {

std::string DefaultCoordinator() {
  const char* env = std::getenv("KENNEL_COORDINATOR");
  return env != nullptr && *env != '\0' ? env : "127.0.0.1:7070";
}

std::shared_ptr<grpc::ChannelCredentials> Credentials() {
  static const auto credentials = [] {
    auto c = core::MakeChannelCredentials(core::TlsFilesFromEnvironment());
    if (!c.ok()) {
      std::cerr << "kennelctl: " << c.status().message() << " (from KENNEL_TLS_CA, KENNEL_TLS_CERT, KENNEL_TLS_KEY)\n";
      std::exit(2);
    }
    return *c;
  }();
  return credentials;
}

std::unique_ptr<kennel::v1::Admin::Stub> AdminStub(const std::string& address) {
  return kennel::v1::Admin::NewStub(core::CreateCoordinatorChannel(address, Credentials()));
}

std::unique_ptr<kennel::v1::Coordinator::Stub> CoordinatorStub(const std::string& address) {
  return kennel::v1::Coordinator::NewStub(core::CreateCoordinatorChannel(address, Credentials()));
}

std::unique_ptr<grpc::ClientContext> Context(int seconds) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return context;
}

absl::Status RpcError(const grpc::Status& status, Peer peer, absl::string_view address) {
  if (status.ok()) return absl::OkStatus();
  const bool coordinator = peer == Peer::kCoordinator;
  const std::string what = coordinator ? "the coordinator" : "the inference node";
  const std::string detail = status.error_message().empty() ? "" : absl::StrCat(": ", status.error_message());
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE: {
      // A TLS server closes a plaintext connection, or one without a client certificate,
      // during the handshake: all the client sees is a closed socket.
      const core::TlsFiles tls = core::TlsFilesFromEnvironment();
      const std::string hint =
          !tls.enabled() ? " (if it uses TLS: set KENNEL_TLS_CA, KENNEL_TLS_CERT and KENNEL_TLS_KEY)"
          : tls.cert.empty() ? " (if it requires client certificates: set KENNEL_TLS_CERT and KENNEL_TLS_KEY)"
                             : "";
      return absl::UnavailableError(absl::StrCat("cannot reach ", what, " at ", address, detail, hint));
    }
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::DeadlineExceededError(absl::StrCat(what, " at ", address, " did not answer in time", detail));
    case grpc::StatusCode::UNIMPLEMENTED:
      return absl::FailedPreconditionError(absl::StrCat(
          address, " is not a Kennel ", coordinator ? "coordinator" : "inference node",
          " (it does not serve ", coordinator ? "kennel.v1.Admin" : "kennel.v1.Inference", "; ",
          coordinator ? "is it an inference node's address? set -c to the coordinator's"
                      : "is it the coordinator's address? set -s to an inference node's",
          ")"));
    default: {
      // The server's own words (a refused spec, an unknown job) need no prefix.
      absl::Status converted = core::FromGrpcStatus(status);
      if (!status.error_message().empty()) return converted;
      return absl::Status(converted.code(), absl::StrCat(what, " at ", address, " answered ",
                                                         absl::StatusCodeToString(converted.code())));
    }
  }
}

}  // namespace kennel::cli
