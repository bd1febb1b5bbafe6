// Defaults and validation for training job specs, shared by the coordinator (which refuses a
// bad spec at submission with INVALID_ARGUMENT) and trainers (which apply the same defaults).
#ifndef KENNEL_CORE_JOB_SPEC_H_
#define KENNEL_CORE_JOB_SPEC_H_

#include "absl/status/statusor.h"
#include "kennel/v1/job.pb.h"

namespace kennel::core {

inline constexpr int64_t kDefaultBucketCapBytes = 25 << 20;
// Seconds of training between rank 0's time-based checkpoints: what a lost trainer repeats at
// most, against an upload every interval (ResNet-50 with momentum: ~200 MB).
inline constexpr int32_t kDefaultCheckpointIntervalS = 120;

// Fills defaults into fields that are not set (batch 64, SGD lr 0.01 momentum 0.9, constant
// schedule, backend gloo, 2 data workers, 1 torch thread, 60 s collective timeout, 25 MiB
// buckets, splits) and checks every field, naming the first bad one. A field set to 0 is 0
// (momentum, weight decay) or refused (epochs, batch size, learning rate, world size); NaN
// and infinite values are refused.
absl::StatusOr<kennel::v1::JobSpec> NormalizeJobSpec(kennel::v1::JobSpec spec);

// The learning rate at optimizer step `global_step` (0-based) of a run with
// `steps_per_epoch` steps per epoch: warm-up, then the schedule.
double LearningRateAt(const kennel::v1::TrainingSpec& training, int64_t global_step,
                      int64_t steps_per_epoch);

}  // namespace kennel::core

#endif  // KENNEL_CORE_JOB_SPEC_H_
