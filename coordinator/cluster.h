// The coordinator's logic, free of gRPC: membership (registration, heartbeats, dead-node
// detection), training jobs as durable state machines, scheduling onto free trainers,
// recovery from lost trainers (generation fencing, resume from checkpoint), deploys, and the
// views kennelctl shows. The rendezvous key-value store (Rendezvous), deploys' version choice
// and answers (Deployments) and the durable writes (StateWriter) are parts of their own with
// their own locks; membership and jobs share the cluster's (a lost member re-forms its job).
//
// Job states: PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, and RUNNING ->
// RECOVERING -> RUNNING when a trainer is lost (generation + 1, survivors aborted). After a
// coordinator restart a running job stays RUNNING at its generation while its ranks register
// again (they train on through the outage); it recovers only if they do not come back.
//
// Thread-safe. Owns a scheduler thread (dead-node detection and scheduling every
// `tick`); the destructor stops it. Messages to trainers go through TrainerChannel.
#ifndef KENNEL_COORDINATOR_CLUSTER_H_
#define KENNEL_COORDINATOR_CLUSTER_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/artifact_store.h"
#include "coordinator/autoscaling.h"
#include "coordinator/deployments.h"
#include "coordinator/rendezvous.h"
#include "coordinator/state_store.h"
#include "coordinator/state_writer.h"
#include "kennel/v1/admin.pb.h"
#include "kennel/v1/coordinator.pb.h"

namespace kennel::coordinator {

// The way to one connected member (its control stream). Neither call blocks.
class TrainerChannel {
 public:
  virtual ~TrainerChannel() = default;
  virtual void Send(const kennel::v1::CoordinatorMessage& message) = 0;
  // Ends the stream with `why` (after what was queued is written): the member reconnects
  // and registers again. Later Sends are dropped.
  virtual void Close(const absl::Status& why) = 0;
};

struct ClusterOptions {
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // A trainer silent this long is dead.
  absl::Duration heartbeat_timeout = absl::Seconds(10);
  absl::Duration tick = absl::Milliseconds(200);
  // Recoveries (re-formed groups) a job may have within `recovery_window` before it fails: a
  // job that keeps breaking stops, one that loses a trainer now and then goes on.
  int max_recoveries = 3;
  absl::Duration recovery_window = absl::Hours(1);
  // After a coordinator restart, a job that was running keeps its generation this long while
  // its trainers (which trained on through the outage) register again; only if some do not
  // is the group re-formed from the checkpoint.
  absl::Duration reattach_timeout = absl::Seconds(30);
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

class Cluster : public ServingFleet {
 public:
  // Loads persisted state; jobs that were running are set to recover at the next generation.
  static absl::StatusOr<std::unique_ptr<Cluster>> Create(ClusterOptions options, StateStore* state,
                                                         ArtifactStore* artifacts);
  ~Cluster() override;

  // --- members (control stream) ---
  // ALREADY_EXISTS when another process (another incarnation) holds the name on a live
  // stream: it is never evicted. The same incarnation on a new stream replaces its old one.
  absl::StatusOr<kennel::v1::RegisterAck> RegisterTrainer(const kennel::v1::Register& request,
                                                          std::shared_ptr<TrainerChannel> channel);
  // A message on `channel`; ignored unless that is the node's current stream (a member
  // declared dead keeps talking on its old stream until it notices the close).
  void OnTrainerMessage(const std::string& name, const TrainerChannel* channel,
                        const kennel::v1::TrainerMessage& message);
  // The stream of `channel` closed: the node is dead (if that is still its channel).
  void OnTrainerDisconnected(const std::string& name, const TrainerChannel* channel);

  // --- rendezvous store, scoped by job and generation (Rendezvous: never takes the cluster lock) ---
  absl::Status CheckCurrentGeneration(const std::string& job_id, int64_t generation);
  absl::Status StoreSet(const std::string& job_id, int64_t generation, const std::string& key,
                        const std::string& value);
  // NOT_FOUND naming the first missing key.
  absl::StatusOr<std::vector<std::string>> StoreGet(const std::string& job_id, int64_t generation,
                                                    const std::vector<std::string>& keys);

  // --- admin ---
  // Validates the spec, indexes the dataset, persists the job: INVALID_ARGUMENT for a bad
  // spec or dataset.
  absl::StatusOr<kennel::v1::JobStatus> SubmitJob(kennel::v1::JobSpec spec);
  absl::StatusOr<kennel::v1::JobStatus> CancelJob(const std::string& job_id);
  // A FAILED job with a checkpoint runs again from it (next generation, a fresh recovery
  // window); FAILED_PRECONDITION otherwise.
  absl::StatusOr<kennel::v1::JobStatus> ResumeJob(const std::string& job_id);
  // Asks every running job's rank 0 for a checkpoint and waits up to `timeout` for them (the
  // coordinator is about to stop). Returns how many of the running jobs saved one.
  std::pair<int, int> CheckpointRunningJobs(absl::Duration timeout);
  absl::StatusOr<kennel::v1::JobStatus> GetJob(const std::string& job_id);
  std::vector<kennel::v1::JobStatus> ListJobs(int limit);
  kennel::v1::ClusterStatus Status();
  // Blocks until the job changed after `seen` (a change counter) or `timeout` passed.
  absl::StatusOr<std::pair<kennel::v1::JobStatus, int64_t>> WaitForJobChange(
      const std::string& job_id, int64_t seen, absl::Duration timeout);

  // --- serving (cluster_serving.cc) ---
  // Sends DeployModel to the inference nodes and waits for their DeployResults.
  absl::StatusOr<kennel::v1::DeployResponse> Deploy(const kennel::v1::DeployRequest& request);
  // The version `request` would deploy (Deployments::ChooseVersion).
  absl::StatusOr<int64_t> ChooseVersion(const kennel::v1::DeployRequest& request) {
    return deployments_.ChooseVersion(request);
  }
  // ServingFleet, for the autoscaler.
  std::vector<InferenceNodeView> InferenceNodes() override;
  absl::Status Retire(const std::string& node, const std::string& reason) override;
  absl::StatusOr<int64_t> VersionToServe(const std::string& model) override;

  // The coordinator is stopping: streams that close from now on are its own doing, not lost
  // members (their jobs are left as they are, to carry on after the restart).
  void BeginShutdown();

  // One scheduling pass (the scheduler thread calls it; tests may too).
  void Tick();

 private:
  struct Node {
    kennel::v1::NodeStatus status;
    std::shared_ptr<TrainerChannel> channel;  // Null when disconnected.
    absl::Time last_heartbeat;
    absl::Time connected_at;
  };
  struct Job {
    StoredJob data;
    std::vector<std::string> digests;
    std::set<int> finished;
    std::deque<absl::Time> recovery_times;  // Within the recovery window.
    // Set while a job that was running before a coordinator restart waits for its ranks.
    std::optional<absl::Time> reattach_deadline;
    int64_t changes = 0;
  };

  Cluster(ClusterOptions options, StateStore* state, ArtifactStore* artifacts)
      : options_(std::move(options)), state_(state), artifacts_(artifacts),
        writer_(std::make_unique<StateWriter>(state)), deployments_(state) {}

  static bool Ended(const Job& job);
  // A job that ended needing no checkpoint (succeeded, cancelled) has its checkpoint deleted.
  void DropCheckpoint(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues the job's status (and `event`, when not empty) for the state store (StateWriter:
  // never waits for the disk); an error is logged.
  void Persist(Job& job, const std::string& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The same, waiting for the write (calls an administrator made answer with its result).
  absl::Status PersistChecked(Job& job, const std::string& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Touch(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AbortRanks(Job& job, int64_t generation, const std::string& reason,
                  const std::string& except_node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NodeLost(Node& node, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RUNNING -> RECOVERING at the next generation (or FAILED past the recovery limit); aborts
  // the ranks but `except_node`.
  void RecoverJob(Job& job, const std::string& what, const std::string& except_node)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Schedule() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Elastic: a job below its world size re-forms with free trainers after an epoch (its end
  // is checkpointed), unless other jobs wait for them.
  void MaybeGrow(Job& job, int64_t finished_epoch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Jobs waiting for their ranks after a restart: go on when all are back, recover at the
  // deadline otherwise.
  void CheckReattaching(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Job* FindCurrent(const std::string& job_id, int64_t generation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SchedulerLoop();

  const ClusterOptions options_;
  StateStore* const state_;
  ArtifactStore* const artifacts_;
  std::unique_ptr<StateWriter> writer_;  // Job and node writes; flushed by the destructor.
  Rendezvous rendezvous_;  // Its own lock: opened and closed under mu_, read and written without it.
  Deployments deployments_;  // Its own lock: answers are recorded under mu_, awaited without it.

  absl::Mutex mu_;
  std::map<std::string, Node> nodes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Job> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> job_order_ ABSL_GUARDED_BY(mu_);  // Submission order.
  int64_t next_job_number_ ABSL_GUARDED_BY(mu_) = 1;
  // Why a RECOVERING job recovers, kept for its "waiting for ..." message.
  std::map<std::string, std::string> recovering_since_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::thread scheduler_;
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_CLUSTER_H_
