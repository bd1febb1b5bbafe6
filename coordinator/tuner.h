// Tuning jobs: a hyperparameter search run by the coordinator, each trial an ordinary training
// job submitted to the cluster (scheduled onto free trainers beside every other job, possibly
// data-parallel itself). core/tuning.h holds the rules (validation, sampling, ASHA's rungs and
// promotion); this runs them over time:
//
//   - starts trials while the budget (trials, trial-epochs, wall time) and the parallelism
//     allow, each with its sampled values and seed recorded before its job is submitted;
//   - reads every running trial's per-epoch evaluation from its job (never from logs); under
//     ASHA a trial reaching a rung is judged against the trials recorded there before it and,
//     if not in their top 1/eta, its job is cancelled at once (its trainers go back to the
//     cluster);
//   - when nothing runs and nothing may start, registers the best trial that trained all its
//     epochs as a version of the tuning job's name, with its lineage (tuning job, trial,
//     hyperparameters, the trial's own model).
//
// Every change is written to the state database before the next step, so a coordinator
// restart continues the search: running trials' jobs carry on in the cluster and are read
// again, and a trial recorded but not yet submitted is found among the cluster's jobs or
// submitted then.
//
// Thread-safe. Owns a thread that steps every search each `tick`; the destructor stops it.
#ifndef KENNEL_COORDINATOR_TUNER_H_
#define KENNEL_COORDINATOR_TUNER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/artifact_store.h"
#include "coordinator/cluster.h"
#include "coordinator/state_store.h"
#include "kennel/v1/admin.pb.h"
#include "kennel/v1/tuning.pb.h"

namespace kennel::coordinator {

// What the tuner needs of the cluster. Cluster and ArtifactStore provide it in the
// coordinator (ClusterTrialRunner); tests provide fake trials.
class TrialRunner {
 public:
  virtual ~TrialRunner() = default;
  virtual absl::StatusOr<kennel::v1::JobStatus> Submit(kennel::v1::JobSpec spec) = 0;
  virtual absl::StatusOr<kennel::v1::JobStatus> Get(const std::string& job_id) = 0;
  virtual absl::StatusOr<kennel::v1::JobStatus> Cancel(const std::string& job_id) = 0;
  // Jobs named `name` created at or after `since_unix_ms`, oldest first.
  virtual std::vector<kennel::v1::JobStatus> Find(const std::string& name, int64_t since_unix_ms) = 0;
  // ArtifactStore::PublishModel.
  virtual absl::StatusOr<kennel::v1::ModelVersion> Publish(const std::string& source_name,
                                                           int64_t source_version, const std::string& name,
                                                           const kennel::v1::Lineage& lineage,
                                                           const std::string& job_id) = 0;
};

std::unique_ptr<TrialRunner> ClusterTrialRunner(Cluster* cluster, ArtifactStore* artifacts);

struct TunerOptions {
  absl::Duration tick = absl::Milliseconds(250);
  // A search whose last this-many ended trials all failed stops (FAILED): a spec that cannot
  // train (a dataset the trainers lack, say) does not spend the whole budget failing.
  int max_consecutive_failures = 3;
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

class Tuner {
 public:
  // Loads the tuning jobs in `state`; those still running continue at the first tick.
  static absl::StatusOr<std::unique_ptr<Tuner>> Create(TunerOptions options, StateStore* state,
                                                       TrialRunner* runner);
  ~Tuner();

  // Normalizes and validates the spec (INVALID_ARGUMENT naming the problem), records the
  // tuning job and starts its first trials.
  absl::StatusOr<kennel::v1::TuningStatus> Submit(kennel::v1::TuningSpec spec);
  absl::StatusOr<kennel::v1::TuningStatus> Get(const std::string& tuning_id);
  // Newest first.
  std::vector<kennel::v1::TuningStatus> List(int limit);
  // Cancels the running trials; the best trial so far, if one trained all its epochs, is
  // still registered. FAILED_PRECONDITION for a tuning job that already ended.
  absl::StatusOr<kennel::v1::TuningStatus> Cancel(const std::string& tuning_id);

  // One step of every running search (the tuner's thread calls it; tests may too).
  void Tick();

 private:
  Tuner(TunerOptions options, StateStore* state, TrialRunner* runner)
      : options_(std::move(options)), state_(state), runner_(runner) {}

  // Reads the trial's job and judges it at the rungs it reached.
  void Refresh(kennel::v1::TuningStatus& t, kennel::v1::Trial& trial) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops a running trial's job (ASHA, budget, cancel); the trial ends as `state`.
  void StopTrial(kennel::v1::TuningStatus& t, kennel::v1::Trial& trial, kennel::v1::TrialState state,
                 const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records trial number `number` (persisted before its job is submitted), then submits it.
  void StartTrial(kennel::v1::TuningStatus& t, int number) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // may_exist: the trial was recorded before a restart, so its job may have been submitted.
  void SubmitTrialJob(kennel::v1::TuningStatus& t, kennel::v1::Trial& trial, bool may_exist)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether another trial fits the trial-epoch budget, counting what running trials may still
  // train before their next judgement.
  bool EpochsAllowAnother(const kennel::v1::TuningStatus& t) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Advance(kennel::v1::TuningStatus& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the search as `state` (the best completed trial's model registered when there is one).
  void Finish(kennel::v1::TuningStatus& t, kennel::v1::JobState state, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateTotals(kennel::v1::TuningStatus& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Save(kennel::v1::TuningStatus& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();

  const TunerOptions options_;
  StateStore* const state_;
  TrialRunner* const runner_;

  absl::Mutex mu_;
  std::map<std::string, kennel::v1::TuningStatus> tunings_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);  // Submission order.
  int64_t next_number_ ABSL_GUARDED_BY(mu_) = 1;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_TUNER_H_
