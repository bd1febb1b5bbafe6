// A whole coordinator process: state database, artifact store, cluster logic, the tuner and the gRPC
// server (Coordinator + Admin services on one port). Create() starts serving; Shutdown()
// stops within its deadline.
#ifndef KENNEL_COORDINATOR_COORDINATOR_H_
#define KENNEL_COORDINATOR_COORDINATOR_H_

#include <grpcpp/server.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/artifact_store.h"
#include "coordinator/cluster.h"
#include "core/tls.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/state_store.h"
#include "coordinator/tuner.h"

namespace kennel::coordinator {

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
};

class Coordinator {
 public:
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options);
  ~Coordinator();

  int port() const { return port_; }
  Cluster& cluster() { return *cluster_; }
  Tuner& tuner() { return *tuner_; }
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
  std::unique_ptr<CoordinatorService> coordinator_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_COORDINATOR_H_
