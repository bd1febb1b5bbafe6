// A trainer node process: dials the coordinator (the coordinator never dials trainers) and
// keeps one control stream (core::ControlStream: register, heartbeats, reconnects), and runs
// each assigned job generation on its own thread: rendezvous through the coordinator, train,
// report progress, upload checkpoints and (rank 0) the model.
//
// Run() blocks until Shutdown(); Shutdown() may be called from any thread or a signal
// watcher and returns once everything is joined.
#ifndef KENNEL_TRAINER_NODE_TRAINER_NODE_H_
#define KENNEL_TRAINER_NODE_TRAINER_NODE_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/member/control_stream.h"
#include "core/tls.h"
#include "kennel/v1/coordinator.grpc.pb.h"

namespace kennel::trainer {

class Communicator;

struct TrainerNodeOptions {
  std::string coordinator = "127.0.0.1:7070";
  // Unique in the cluster; default: hostname.
  std::string name;
  // Where this machine keeps the datasets (empty: the path in the job spec).
  std::string dataset_root;
  // Address peers reach this trainer's collective endpoint on.
  std::string advertise_host = "127.0.0.1";
  // Scratch space for transfers and model staging.
  std::string work_dir = "/tmp/kennel-trainer";
  // TLS to the coordinator (the CA, and this node's certificate: its name is the node's).
  core::TlsFiles tls;
};

class TrainerNode {
 public:
  static absl::StatusOr<std::unique_ptr<TrainerNode>> Create(TrainerNodeOptions options);
  ~TrainerNode();

  void Run();
  void Shutdown();

 private:
  TrainerNode(TrainerNodeOptions options, std::shared_ptr<grpc::ChannelCredentials> credentials);
  // `keep`: a result the coordinator must get even across a reconnect (see ControlStream).
  void Send(const kennel::v1::TrainerMessage& message, bool keep = false) { control_->Send(message, keep); }
  kennel::v1::Register MakeRegister();
  kennel::v1::Heartbeat MakeHeartbeat();
  void JobLoop();
  void RunAssignment(const kennel::v1::Assignment& assignment);
  // Uploads rank 0's model folder `dir` as `ref`, waiting out an unreachable coordinator for
  // up to kPublishPatience (or until cancelled).
  absl::StatusOr<kennel::v1::ArtifactRef> PublishModel(const std::string& dir, const kennel::v1::ArtifactRef& ref,
                                                       const std::string& tag);
  static constexpr absl::Duration kPublishPatience = absl::Minutes(30);
  void OnCoordinatorMessage(const kennel::v1::CoordinatorMessage& message);

  const TrainerNodeOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<kennel::v1::Coordinator::Stub> stub_;

  absl::Mutex shutdown_mu_;  // One Shutdown at a time, whole.
  absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<kennel::v1::Assignment> pending_ ABSL_GUARDED_BY(mu_);
  // The generation being trained now (job id empty when idle).
  std::string current_job_ ABSL_GUARDED_BY(mu_);
  int64_t current_generation_ ABSL_GUARDED_BY(mu_) = 0;
  // The current assignment's group while it exists: an abort from the coordinator, a new
  // assignment or Shutdown aborts it, freeing a collective that waits for a stalled peer.
  Communicator* comm_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::atomic<bool> cancel_{false};
  // The coordinator asked the running job's rank 0 for a checkpoint.
  std::atomic<bool> checkpoint_now_{false};

  std::thread job_thread_;
  std::unique_ptr<core::ControlStream> control_;  // Started last, stopped first.
};

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_TRAINER_NODE_H_
