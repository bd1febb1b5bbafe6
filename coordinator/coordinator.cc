#include "coordinator/coordinator.h"

#include <grpcpp/server_builder.h>
#include <httplib.h>

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/grpc_keepalive.h"
#include "absl/strings/numbers.h"
#include "coordinator/node_providers.h"
#include "core/status_macros.h"
#include "core/subprocess.h"

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
  const std::string& provider = options.autoscale.provider;
  if (provider != "none" && provider != "local" && provider != "command") {
    return absl::InvalidArgumentError(absl::StrCat("--autoscale_provider must be none, local or command, not '", provider, "'"));
  }
  c->autoscaling_ = std::make_unique<Autoscaling>(options.autoscaling, c->state_.get(), c->cluster_.get());
  c->admin_service_ = std::make_unique<AdminService>(c->cluster_.get(), c->tuner_.get(), c->state_.get(),
                                                     options.tls.enabled(), c->autoscaling_.get());
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
  // The provider needs the address members register at, known now.
  const std::string self = absl::StrCat(options.listen_address.substr(0, options.listen_address.rfind(':')), ":", c->port_);
  if (provider == "local") {
    ASSIGN_OR_RETURN(std::string binary, core::FindKennelBinary("kennel-inference", "inference_node"));
    ASSIGN_OR_RETURN(auto p, MakeLocalProvider({.inference_binary = binary,
                                                 .coordinator = self,
                                                 .work_dir = options.data_dir + "/autoscaled",
                                                 .extra_args = options.autoscale.node_args,
                                                 .first_core = options.autoscale.first_core}));
    c->autoscaling_->SetProvider(std::move(p));
  } else if (provider == "command") {
    ASSIGN_OR_RETURN(auto p, MakeCommandProvider({.scale_out = options.autoscale.scale_out,
                                                   .scale_in = options.autoscale.scale_in,
                                                   .coordinator = self,
                                                   .scratch_dir = options.data_dir + "/autoscale-commands"}));
    c->autoscaling_->SetProvider(std::move(p));
  }
  RETURN_IF_ERROR(c->autoscaling_->Start());
  if (!options.metrics_address.empty()) {
    const size_t colon = options.metrics_address.rfind(':');
    int port = -1;
    if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(options.metrics_address.substr(colon + 1), &port) ||
        port < 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("--metrics_listen '", options.metrics_address, "' is not host:port"));
    }
    const std::string host = options.metrics_address.substr(0, colon);
    c->http_ = std::make_unique<httplib::Server>();
    Autoscaling* autoscaling = c->autoscaling_.get();
    c->http_->Get("/metrics", [autoscaling](const httplib::Request&, httplib::Response& res) {
      res.set_content(autoscaling->RenderMetrics(), "text/plain; version=0.0.4");
    });
    c->metrics_port_ = port == 0 ? c->http_->bind_to_any_port(host) : (c->http_->bind_to_port(host, port) ? port : -1);
    if (c->metrics_port_ <= 0) return absl::UnavailableError(absl::StrCat("cannot listen for /metrics on ", options.metrics_address));
    c->http_thread_ = std::thread([http = c->http_.get()] { http->listen_after_bind(); });
  }
  return c;
}

void Coordinator::Shutdown(absl::Duration deadline) {
  if (cluster_) cluster_->BeginShutdown();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(deadline));
}

Coordinator::~Coordinator() {
  Shutdown();
  if (http_) {
    http_->stop();
    if (http_thread_.joinable()) http_thread_.join();
  }
  server_.reset();
  autoscaling_.reset();
  tuner_.reset();
  cluster_.reset();
}

}  // namespace kennel::coordinator
