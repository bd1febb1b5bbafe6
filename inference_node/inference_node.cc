#include "inference_node/inference_node.h"

#include "core/logging.h"
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>
#include <httplib.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/grpc_keepalive.h"
#include "absl/strings/str_split.h"
#include "core/ml/artifact.h"
#include "core/member/coordinator_client.h"
#include "core/status_macros.h"

namespace kennel::inference {
namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<InferenceNode>> InferenceNode::Create(InferenceNodeOptions options) {
  if (!options.tls.enabled() && !options.insecure && !core::IsLoopbackAddress(options.listen_address)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing to serve on ", options.listen_address, " without TLS: give --tls_cert, --tls_key and --tls_ca "
        "(`kennelctl certs` makes them), or pass --insecure on a network only the cluster and its clients reach"));
  }
  if (!options.coordinator.empty()) RETURN_IF_ERROR(core::CheckCoordinatorAddress(options.coordinator));
  ASSIGN_OR_RETURN(auto server_credentials, core::MakeServerCredentials(options.tls));
  ASSIGN_OR_RETURN(auto channel_credentials, core::MakeChannelCredentials(options.tls));
  if (options.name == "inference" && !options.tls.cert.empty()) {
    ASSIGN_OR_RETURN(options.name, core::CertificateName(options.tls.cert));  // Its certificate says who it is.
  }
  std::unique_ptr<InferenceNode> node(new InferenceNode(std::move(options)));
  auto& o = node->options_;
  ASSIGN_OR_RETURN(node->engine_, Engine::Create(o.engine, &node->metrics_));
  // Requests inside the engine never exceed what its queues hold: the preprocessing queue,
  // and the batchers' queues together. Beyond that, streams wait to read on.
  const int capacity = std::min(o.engine.preprocess_queue,
                                o.engine.model.instances * o.engine.model.batcher.max_queue_size);
  node->gate_ = std::make_unique<AdmissionGate>(capacity);
  node->service_ = std::make_unique<InferenceService>(node->engine_.get(), node->gate_.get(),
                                                      o.max_in_flight_per_stream, o.tls.enabled());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.listen_address, server_credentials, &node->port_);
  builder.RegisterService(node->service_.get());
  builder.SetMaxReceiveMessageSize(o.max_message_bytes);
  core::SetServerKeepalive(builder);
  node->server_ = builder.BuildAndStart();
  if (node->server_ == nullptr || node->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", o.listen_address));
  }
  node->SetServing(false);

  std::string host = o.listen_address.substr(0, o.listen_address.rfind(':'));
  int metrics_port = o.metrics_port;
  if (!o.metrics_address.empty()) {
    const size_t colon = o.metrics_address.rfind(':');
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(o.metrics_address.substr(colon + 1), &metrics_port) || metrics_port < 0 ||
        metrics_port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics address '", o.metrics_address, "' is not host:port"));
    }
    host = o.metrics_address.substr(0, colon);
  }
  if (metrics_port >= 0) {
    node->http_ = std::make_unique<httplib::Server>();
    Metrics* metrics = &node->metrics_;
    node->http_->Get("/metrics", [metrics](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics->Render(), "text/plain; version=0.0.4");
    });
    // Probes for orchestrators whose prober cannot present a client certificate (the
    // kubelet's gRPC probe): what grpc.health.v1 says, on this private port, without opening
    // the TLS data path. /healthz: the process answers; /readyz: a model is warmed and the node
    // is not draining (503 otherwise).
    node->http_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok\n", "text/plain");
    });
    const std::atomic<bool>* serving = &node->serving_;
    node->http_->Get("/readyz", [serving](const httplib::Request&, httplib::Response& res) {
      const bool ready = serving->load();
      res.status = ready ? 200 : 503;
      res.set_content(ready ? "serving\n" : "not serving: no model warmed yet, or draining\n", "text/plain");
    });
    node->metrics_port_ = metrics_port == 0 ? node->http_->bind_to_any_port(host)
                                            : (node->http_->bind_to_port(host, metrics_port) ? metrics_port : -1);
    if (node->metrics_port_ <= 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen for /metrics on ", host, ":", metrics_port));
    }
    node->http_thread_ = std::thread([http = node->http_.get()] { http->listen_after_bind(); });
  }

  if (!o.model_dir.empty()) RETURN_IF_ERROR(node->DeployLocal(o.model_dir));
  if (!o.coordinator.empty()) {
    node->coordinator_ = v1::Coordinator::NewStub(core::CreateCoordinatorChannel(o.coordinator, channel_credentials));
    if (!o.model.empty()) {
      std::vector<std::string> parts = absl::StrSplit(o.model, ':');
      int64_t version = 0;
      if (parts.size() > 2 || (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &version))) {
        return absl::InvalidArgumentError(absl::StrCat("--model must be name[:version], not '", o.model, "'"));
      }
      RETURN_IF_ERROR(node->DeployFromCoordinator(parts[0], version));
    }
    if (o.advertise_address.empty()) o.advertise_address = absl::StrCat(host, ":", node->port_);
    InferenceNode* self = node.get();
    node->control_ = std::make_unique<core::ControlStream>(
        node->coordinator_.get(), "inference node " + o.name,
        core::ControlStreamCallbacks{
            .make_register = [self] {
              v1::Register r;
              r.set_name(self->options_.name);
              r.set_role(v1::INFERENCE);
              r.set_serving_address(self->options_.advertise_address);
              r.mutable_resources()->set_cpu_cores(static_cast<int32_t>(std::thread::hardware_concurrency()));
              const bool gpu = self->options_.engine.model.on_gpu();
              r.mutable_resources()->set_device(gpu ? "cuda" : "cpu");
              r.mutable_resources()->set_gpus(gpu ? static_cast<int32_t>(torch::cuda::device_count()) : 0);
              // What it serves now: the coordinator sends the version it wants if that differs.
              if (auto model = self->engine_->current()) {
                r.set_model(absl::StrCat(model->manifest().name(), ":", model->manifest().version()));
              }
              return r;
            },
            .make_heartbeat = [self] {
              v1::Heartbeat h;
              if (auto model = self->engine_->current()) {
                h.set_model(absl::StrCat(model->manifest().name(), ":", model->manifest().version()));
              }
              h.set_serving(self->serving_);
              h.set_draining(self->retiring_);
              const int queued = self->engine_->queue_depth();
              h.set_queue_depth(queued);
              *h.mutable_load() =
                  self->metrics_.TakeLoad(self->options_.engine.model.instances, queued, absl::Now());
              return h;
            },
            .on_message = [self](const v1::CoordinatorMessage& m) { self->OnCoordinatorMessage(m); }});
  }
  LOG(INFO) << "inference node " << o.name << " serving on port " << node->port_
            << (node->metrics_port_ > 0 ? absl::StrCat(", metrics on port ", node->metrics_port_) : "");
  return node;
}

InferenceNode::InferenceNode(InferenceNodeOptions options) : options_(std::move(options)) {}

InferenceNode::~InferenceNode() {
  Shutdown();
  if (retire_thread_.joinable()) retire_thread_.join();
}

void InferenceNode::SetServing(bool serving) {
  serving_ = serving;
  if (server_ == nullptr) return;  // Create failed before the server started.
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus(serving);
  health->SetServingStatus("kennel.v1.Inference", serving);
}

absl::Status InferenceNode::DeployLocal(const std::string& artifact_dir) {
  RETURN_IF_ERROR(engine_->Deploy(artifact_dir));
  SetServing(true);
  return absl::OkStatus();
}

absl::Status InferenceNode::DeployFromCoordinator(const std::string& name, int64_t version) {
  if (!coordinator_) return absl::FailedPreconditionError("no --coordinator to fetch models from");
  v1::ArtifactRef ref;
  ref.set_kind(v1::ArtifactRef::MODEL);
  ref.set_name(name);
  ref.set_version(version);
  std::string dir;
  if (version > 0) {
    dir = (fs::path(options_.cache_dir) / name / std::to_string(version)).string();
  }
  std::error_code ec;
  if (dir.empty() || !fs::exists(dir, ec)) {
    // Unknown version (newest) or not cached: fetch into a scratch folder, then file it
    // under the version the coordinator reports.
    const std::string scratch = absl::StrCat(options_.cache_dir, "/.download-", ::getpid(), "-", name);
    fs::create_directories(options_.cache_dir, ec);
    fs::remove_all(scratch, ec);
    ASSIGN_OR_RETURN(v1::ArtifactRef got, core::DownloadFolder(*coordinator_, ref, scratch, absl::Minutes(30)));
    dir = (fs::path(options_.cache_dir) / name / std::to_string(got.version())).string();
    fs::create_directories(fs::path(dir).parent_path(), ec);
    if (fs::exists(dir, ec)) {
      fs::remove_all(scratch, ec);
    } else {
      fs::rename(scratch, dir, ec);
      if (ec) return absl::InternalError(absl::StrCat("caching ", dir, ": ", ec.message()));
    }
  }
  // LoadArtifact verifies the checksum: a damaged cache entry is refused, then refetched.
  absl::Status s = DeployLocal(dir);
  if (absl::IsDataLoss(s)) {
    fs::remove_all(dir, ec);
    LOG(WARNING) << "cached " << dir << " was damaged (" << s << "); fetching again";
    return DeployFromCoordinator(name, version);
  }
  return s;
}

void InferenceNode::OnCoordinatorMessage(const v1::CoordinatorMessage& message) {
  if (message.has_retire()) {
    // Shutdown stops the control stream, whose reader this is: it runs on a thread of its own.
    absl::MutexLock lock(&deploy_mu_);
    if (shut_down_ || retiring_) return;
    retiring_ = true;
    metrics_.BeginDrain();
    const v1::Retire retire = message.retire();
    LOG(INFO) << "retiring (" << retire.reason() << "): NOT_SERVING, answering what is in flight, then exiting";
    retire_thread_ = std::thread([this, retire] {
      Shutdown(retire.drain_timeout_ms() > 0 ? absl::Milliseconds(retire.drain_timeout_ms()) : absl::Seconds(30));
      retired_.Notify();
    });
    return;
  }
  if (!message.has_deploy()) return;
  const v1::DeployModel deploy = message.deploy();
  // Loading takes a while; the control stream's reader must not wait for it.
  absl::MutexLock lock(&deploy_mu_);
  if (shut_down_) return;
  deploy_threads_.emplace_back([this, deploy] {
    absl::Status s = DeployFromCoordinator(deploy.name(), deploy.version());
    if (!s.ok()) LOG(ERROR) << "deploy of " << deploy.name() << ":" << deploy.version() << " failed: " << s;
    v1::TrainerMessage reply;
    reply.mutable_deployed()->set_name(deploy.name());
    reply.mutable_deployed()->set_version(deploy.version());
    reply.mutable_deployed()->set_error(std::string(s.message()));
    control_->Send(reply, /*keep=*/true);
  });
}

void InferenceNode::Shutdown(absl::Duration deadline) {
  std::vector<std::thread> deploys;
  {
    absl::MutexLock lock(&deploy_mu_);
    if (shut_down_) return;
    shut_down_ = true;
    deploys.swap(deploy_threads_);
  }
  // Health first: clients that check it (kennelctl with several nodes, a load balancer) stop
  // sending here. Then streams stop reading, answer what they hold and end with UNAVAILABLE
  // (clients reconnect elsewhere); unary calls in progress finish within the deadline.
  const absl::Time until = absl::Now() + deadline;
  SetServing(false);
  if (service_) {
    // Clients watching health need a moment to see NOT_SERVING before streams end: a stream
    // reopened sooner could land here again and be ended at once, and a unary call could meet
    // the server's teardown as CANCELLED. Meanwhile this node serves as usual; after it, calls
    // that still arrive are refused with UNAVAILABLE (retried elsewhere).
    absl::SleepFor(std::min(absl::Milliseconds(500), deadline / 4));
    const int open = service_->Drain();
    if (open > 0) LOG(INFO) << "draining " << open << " open streams";
    if (!service_->WaitForStreamsDone(deadline / 2)) LOG(WARNING) << "streams still open at half the drain deadline";
  }
  for (auto& t : deploys) t.join();
  // A retired node's last heartbeat (every 250 ms) carries what failed while it drained.
  if (control_ && retiring_) absl::SleepFor(absl::Milliseconds(300));
  if (control_) control_->Stop();
  // Create may have failed part way: stop only what was started.
  if (server_) server_->Shutdown(absl::ToChronoTime(until));
  if (http_) {
    http_->stop();
    if (http_thread_.joinable()) http_thread_.join();
  }
  control_.reset();
}

}  // namespace kennel::inference
