// The coordinator's durable state in SQLite (WAL mode, synchronous=FULL): nodes seen, jobs
// (spec, state, generation, metrics) with their dataset indexes and state transitions, the
// model registry, tuning jobs, and models' autoscaling settings. Every write is committed before the call returns, so whatever the
// coordinator acknowledged survives a crash or restart.
//
// Thread-safe: calls are serialised on one connection.
#ifndef KENNEL_COORDINATOR_STATE_STORE_H_
#define KENNEL_COORDINATOR_STATE_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kennel/v1/admin.pb.h"
#include "kennel/v1/autoscale.pb.h"
#include "kennel/v1/dataset.pb.h"
#include "kennel/v1/job.pb.h"
#include "kennel/v1/node.pb.h"
#include "kennel/v1/tuning.pb.h"

struct sqlite3;

namespace kennel::coordinator {

struct StoredJob {
  kennel::v1::JobStatus status;
  kennel::v1::DatasetIndex train;
  kennel::v1::DatasetIndex eval;
};

class StateStore {
 public:
  // Opens (creating if needed) the database at `path`.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& path);
  ~StateStore();

  absl::Status SaveNode(const kennel::v1::NodeStatus& node);
  absl::StatusOr<std::vector<kennel::v1::NodeStatus>> LoadNodes();

  // Inserts a new job with its indexes.
  absl::Status CreateJob(const StoredJob& job);
  // Updates the job's status and, when `event` is not empty, appends a transition record.
  absl::Status UpdateJob(const kennel::v1::JobStatus& status, const std::string& event);
  absl::StatusOr<std::vector<StoredJob>> LoadJobs();
  // "<unix ms> <state> <event>" lines of a job, oldest first.
  absl::StatusOr<std::vector<std::string>> JobEvents(const std::string& job_id);

  // Registers model `name` at the next version (1, 2, ...) and returns that version.
  absl::StatusOr<int64_t> NextModelVersion(const std::string& name);
  absl::Status SaveModel(const kennel::v1::ModelVersion& model);
  absl::StatusOr<std::vector<kennel::v1::ModelVersion>> LoadModels(const std::string& name);

  // Tuning jobs (their trials and rung results), inserted or replaced whole; loaded in
  // submission order.
  absl::Status SaveTuning(const kennel::v1::TuningStatus& tuning);
  absl::StatusOr<std::vector<kennel::v1::TuningStatus>> LoadTunings();

  // Models' autoscaling settings (AutoscaleStatus with model, spec and version set), by model;
  // DeleteAutoscale turns one off.
  absl::Status SaveAutoscale(const kennel::v1::AutoscaleStatus& settings);
  absl::Status DeleteAutoscale(const std::string& model);
  absl::StatusOr<std::vector<kennel::v1::AutoscaleStatus>> LoadAutoscale();

 private:
  explicit StateStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_STATE_STORE_H_
