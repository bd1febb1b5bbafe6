// An inference node: the Inference gRPC service (plus grpc.health.v1, SERVING only while a
// warmed model is loaded), a Prometheus /metrics endpoint, and, with a coordinator, a control
// stream that registers the node, reports its model and load, and takes deploys (download the
// version from the artifact store into a local cache, verify, load beside, switch).
//
// Create() starts everything; Shutdown() stops within its deadline. Thread-safe.
#ifndef KENNEL_INFERENCE_NODE_INFERENCE_NODE_H_
#define KENNEL_INFERENCE_NODE_INFERENCE_NODE_H_

#include <grpcpp/server.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "core/member/control_stream.h"
#include "core/tls.h"
#include "inference_node/engine.h"
#include "inference_node/inference_service.h"
#include "inference_node/metrics.h"

namespace httplib {
class Server;
}

namespace kennel::inference {

struct InferenceNodeOptions {
  // host:port for the Inference service (port 0: any free port).
  std::string listen_address = "127.0.0.1:7080";
  // Address to advertise to the coordinator (default: listen_address with the bound port).
  std::string advertise_address;
  // Prometheus endpoint port on the listen host (0: any free port, -1: off).
  int metrics_port = 0;
  // host:port for the Prometheus endpoint instead (e.g. a private interface while the
  // Inference service faces clients); overrides metrics_port when set.
  std::string metrics_address;
  std::string name = "inference";
  // Optional coordinator (registration, deploys, model download).
  std::string coordinator;
  // A local artifact folder to serve at start, or "name[:version]" to fetch from the
  // coordinator at start (either may be empty: then wait for a deploy).
  std::string model_dir;
  std::string model;
  std::string cache_dir = "/tmp/kennel-inference-cache";
  EngineOptions engine;
  // Requests of one stream between read and written response (a client that stops reading
  // is not read from further).
  int max_in_flight_per_stream = 256;
  int max_message_bytes = 16 << 20;
  // TLS for the Inference service (its certificate; with tls.ca every client needs one the CA
  // issued) and for the channel to the coordinator. Without it, a listen address off the
  // loopback is refused unless `insecure` is set.
  core::TlsFiles tls;
  bool insecure = false;
};

class InferenceNode {
 public:
  static absl::StatusOr<std::unique_ptr<InferenceNode>> Create(InferenceNodeOptions options);
  ~InferenceNode();

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  Engine& engine() { return *engine_; }
  Metrics& metrics() { return metrics_; }

  // Loads a local artifact folder and switches to it (blocks while warming up).
  absl::Status DeployLocal(const std::string& artifact_dir);
  // Downloads name:version (0: newest) from the coordinator (cached), then DeployLocal.
  absl::Status DeployFromCoordinator(const std::string& name, int64_t version);
  void Shutdown(absl::Duration deadline = absl::Seconds(5));
  void Wait() { server_->Wait(); }
  // The coordinator retired this node (autoscaler scale-in) and it has drained: the process
  // should exit.
  bool retired() { return retired_.HasBeenNotified(); }

 private:
  explicit InferenceNode(InferenceNodeOptions options);
  void SetServing(bool serving);
  void OnCoordinatorMessage(const kennel::v1::CoordinatorMessage& message);

  InferenceNodeOptions options_;
  Metrics metrics_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<AdmissionGate> gate_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
  int metrics_port_ = -1;
  std::atomic<bool> serving_{false};  // As grpc.health.v1 says; /readyz reads it.
  std::unique_ptr<kennel::v1::Coordinator::Stub> coordinator_;
  std::unique_ptr<core::ControlStream> control_;
  absl::Mutex deploy_mu_;
  std::vector<std::thread> deploy_threads_ ABSL_GUARDED_BY(deploy_mu_);
  bool shut_down_ = false;
  std::atomic<bool> retiring_{false};
  std::thread retire_thread_;
  absl::Notification retired_;
};

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_INFERENCE_NODE_H_
