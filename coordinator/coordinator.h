// A whole coordinator process: state database, artifact store, cluster logic, the tuner and the gRPC
// server (Coordinator + Admin services on one port). Create() starts serving; Shutdown()
// stops within its deadline.
#ifndef KENNEL_COORDINATOR_COORDINATOR_H_
#define KENNEL_COORDINATOR_COORDINATOR_H_

#include <grpcpp/server.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/artifact_store.h"
#include "coordinator/autoscaling.h"
#include "coordinator/cluster.h"
#include "core/tls.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/state_store.h"
#include "coordinator/tuner.h"

namespace httplib {
class Server;
}

namespace kennel::coordinator {

// How the autoscaler adds and removes inference nodes (node_providers.h).
struct AutoscaleProviderOptions {
  // "none" (decisions are only reported: status, /metrics for Kubernetes' HPA or KEDA),
  // "local" or "command".
  std::string provider = "none";
  // local: more flags for every node, and the first CPU core to pin nodes to (-1: none).
  std::vector<std::string> node_args;
  int first_core = -1;
  // command: the scale-out and scale-in command lines.
  std::string scale_out;
  std::string scale_in;
};

struct CoordinatorOptions {
  // host:port; port 0 picks a free one (see Coordinator::port()).
  std::string listen_address = "127.0.0.1:7070";
  std::string data_dir = "kennel-data";
  ClusterOptions cluster;
  TunerOptions tuner;
  int64_t max_artifact_bytes = int64_t{8} << 30;
  // TLS (mutual: every client needs a certificate from tls.ca; a member registers only under
  // its certificate's name). Without it, a listen address off the loopback is refused unless
  // `insecure` is set.
  core::TlsFiles tls;
  bool insecure = false;
  AutoscaleProviderOptions autoscale;
  AutoscalingOptions autoscaling;
  // host:port for the coordinator's Prometheus /metrics (plain HTTP: a private address);
  // empty: none.
  std::string metrics_address;
};

class Coordinator {
 public:
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options);
  ~Coordinator();

  int port() const { return port_; }
  Cluster& cluster() { return *cluster_; }
  Tuner& tuner() { return *tuner_; }
  Autoscaling& autoscaling() { return *autoscaling_; }
  int metrics_port() const { return metrics_port_; }
  // Blocks until Shutdown.
  void Wait() { server_->Wait(); }
  void Shutdown(absl::Duration deadline = absl::Seconds(5));

 private:
  Coordinator() = default;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<Cluster> cluster_;
  std::unique_ptr<TrialRunner> trial_runner_;
  std::unique_ptr<Tuner> tuner_;  // Before cluster_ in destruction: it calls the cluster.
  std::unique_ptr<Autoscaling> autoscaling_;  // Likewise.
  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
  int metrics_port_ = -1;
  std::unique_ptr<CoordinatorService> coordinator_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_COORDINATOR_H_
