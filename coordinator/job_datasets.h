// Builds a job's training and evaluation indexes from its DatasetSpec (on the coordinator's
// copy of the data), applying the spec's sample limits.
#ifndef KENNEL_COORDINATOR_JOB_DATASETS_H_
#define KENNEL_COORDINATOR_JOB_DATASETS_H_

#include "absl/status/statusor.h"
#include "coordinator/state_store.h"
#include "kennel/v1/job.pb.h"

namespace kennel::coordinator {

// Indexes both splits, fills model.num_classes from the dataset when it is 0, and refuses
// a dataset whose class count differs from the model's. Returns a StoredJob with status.spec
// set (and normalised).
absl::StatusOr<StoredJob> PrepareJob(kennel::v1::JobSpec spec);

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_JOB_DATASETS_H_
