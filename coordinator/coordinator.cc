#include "coordinator/coordinator.h"

#include <grpcpp/server_builder.h>

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/grpc_keepalive.h"
#include "core/status_macros.h"

namespace kennel::coordinator {

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options) {
  if (options.tls.enabled() && options.tls.ca.empty()) {
    return absl::InvalidArgumentError("--tls_ca is required with TLS: members and clients are verified against it");
  }
  if (!options.tls.enabled() && !options.insecure && !core::IsLoopbackAddress(options.listen_address)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing to listen on ", options.listen_address, " without TLS: anyone who reaches it could join, drive "
        "or read the cluster. Give --tls_cert, --tls_key and --tls_ca (`kennelctl certs` makes them), or pass "
        "--insecure on a network only the cluster reaches"));
  }
  ASSIGN_OR_RETURN(auto credentials, core::MakeServerCredentials(options.tls));
  std::unique_ptr<Coordinator> c(new Coordinator());
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot create --data_dir ", options.data_dir, ": ", ec.message()));
  ASSIGN_OR_RETURN(c->state_, StateStore::Open(options.data_dir + "/state.db"));
  ASSIGN_OR_RETURN(c->artifacts_, ArtifactStore::Create(options.data_dir + "/artifacts", c->state_.get()));
  ASSIGN_OR_RETURN(c->cluster_, Cluster::Create(options.cluster, c->state_.get(), c->artifacts_.get()));
  c->trial_runner_ = ClusterTrialRunner(c->cluster_.get(), c->artifacts_.get());
  ASSIGN_OR_RETURN(c->tuner_, Tuner::Create(options.tuner, c->state_.get(), c->trial_runner_.get()));
  c->coordinator_service_ = std::make_unique<CoordinatorService>(c->cluster_.get(), c->artifacts_.get(),
                                                                  options.max_artifact_bytes,
                                                                  /*enforce=*/options.tls.enabled());
  c->admin_service_ = std::make_unique<AdminService>(c->cluster_.get(), c->tuner_.get(), c->state_.get(),
                                                     options.tls.enabled());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, credentials, &c->port_);
  builder.RegisterService(c->coordinator_service_.get());
  builder.RegisterService(c->admin_service_.get());
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(256 << 20);  // Assignments carry dataset indexes.
  core::SetServerKeepalive(builder);
  c->server_ = builder.BuildAndStart();
  if (c->server_ == nullptr || c->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  }
  return c;
}

void Coordinator::Shutdown(absl::Duration deadline) {
  if (cluster_) cluster_->BeginShutdown();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(deadline));
}

Coordinator::~Coordinator() {
  Shutdown();
  server_.reset();
  tuner_.reset();
  cluster_.reset();
}

}  // namespace kennel::coordinator
