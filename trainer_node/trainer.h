// One rank's part of a data-parallel training run: builds the model (optionally from
// torchvision weights, backbone frozen), makes every rank start from rank 0's parameters,
// then per epoch trains on this rank's shard (seeded plan, equal steps on every rank) with
// bucketed gradient all-reduce, evaluates on this rank's share of the evaluation set
// (metrics combined exactly over ranks), and checkpoints on rank 0.
//
// Train() blocks for the whole run; it is meant for a dedicated thread. Callbacks run on
// that thread.
#ifndef KENNEL_TRAINER_NODE_TRAINER_H_
#define KENNEL_TRAINER_NODE_TRAINER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/ml/models.h"
#include "kennel/v1/dataset.pb.h"
#include "kennel/v1/job.pb.h"
#include "trainer_node/checkpoint.h"
#include "trainer_node/communicator.h"
#include "trainer_node/trainable_model.h"

namespace kennel::trainer {

struct TrainingRun {
  kennel::v1::JobSpec spec;  // Normalised (core::NormalizeJobSpec).
  int rank = 0;
  int world_size = 1;
  const kennel::v1::DatasetIndex* train = nullptr;
  const kennel::v1::DatasetIndex* eval = nullptr;
  std::string dataset_root;
  Communicator* comm = nullptr;
  CheckpointStore* checkpoints = nullptr;  // Rank 0 saves; every rank loads when resuming.
  bool resume = false;
  const std::atomic<bool>* cancelled = nullptr;
  // Rank 0: set to ask for a checkpoint within kCheckpointPollSteps steps (cleared when taken).
  std::atomic<bool>* checkpoint_now = nullptr;
  // Rank 0: after each checkpoint is saved.
  std::function<void(const TrainingPosition&)> on_checkpoint = nullptr;
  std::function<void(const kennel::v1::StepMetrics&)> on_step = nullptr;
  std::function<void(const kennel::v1::EpochMetrics&)> on_epoch = nullptr;
  absl::Duration report_interval = absl::Seconds(1);
  // Called with each batch's sample indices before its step (tests count samples with it).
  std::function<void(const std::vector<int64_t>&)> on_batch_samples = nullptr;
  // Called after every optimizer step with the model (diagnostics and tests).
  std::function<void(int64_t global_step, const TrainableModel&)> after_step = nullptr;
};

// Every this many steps the ranks agree (one small all-reduce) whether rank 0 checkpoints now:
// its checkpoint interval passed or checkpoint_now was set.
inline constexpr int64_t kCheckpointPollSteps = 4;

struct TrainingResult {
  // The trained model (either kind), and for a built-in architecture its Classifier.
  std::shared_ptr<TrainableModel> trained;
  std::shared_ptr<core::Classifier> model;
  kennel::v1::TrainingMetrics metrics;
  // SHA-256 over every parameter and buffer: equal on every rank of a healthy run.
  std::string param_digest;
};

// CANCELLED when `cancelled` was set; the communicator's DEADLINE_EXCEEDED (naming the
// missing rank) when a peer was lost; INVALID_ARGUMENT / NOT_FOUND for bad data or weights.
absl::StatusOr<TrainingResult> Train(const TrainingRun& run);

// SHA-256 over the model's state, name by name.
std::string ParamDigest(const CheckpointableModel& model);

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_TRAINER_H_
