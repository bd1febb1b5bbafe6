// Training checkpoints: model parameters and buffers, optimizer state, position in the run
// and the torch RNG state, in one self-checking blob:
//   "KNLCKPT2" | SHA-256 of payload (32 bytes) | payload length (u64 LE) | payload
// where the payload is safetensors: "model.<state_dict name>", "optimizer.<parameter
// index>.<field>" (SGD's momentum_buffer; AdamW's step, exp_avg, exp_avg_sq,
// max_exp_avg_sq), "position", "epoch_partial" and "rng". Kennel's own parser reads it
// (fuzz/checkpoint_fuzzer). "KNLCKPT1" checkpoints (a torch::serialize archive, written
// before 2026-12) still restore. A torn, truncated or corrupt checkpoint is refused with
// DATA_LOSS. Where checkpoints live is a CheckpointStore's business (a local
// folder, or the coordinator's artifact store).
#ifndef KENNEL_TRAINER_NODE_CHECKPOINT_H_
#define KENNEL_TRAINER_NODE_CHECKPOINT_H_

#include <torch/optim/optimizer.h>

#include <algorithm>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/ml/models.h"
#include "trainer_node/trainable_model.h"

namespace kennel::trainer {

struct TrainingPosition {
  int64_t epoch = 0;          // Epoch to continue.
  int64_t step_in_epoch = 0;  // Optimizer steps of that epoch done by the saving group.
  int64_t global_step = 0;    // Optimizer steps of the whole run.
  // The saving group: its size (0: unknown, a checkpoint older than elastic training) and
  // where in the epoch's permutation it started (core::ShardSpec::start). The samples of the
  // epoch trained on so far are the first stage_start + world_size * step_in_epoch * batch.
  int32_t world_size = 0;
  int64_t stage_start = 0;
  // What the steps done of that epoch contributed to its metrics (summed over ranks), so a
  // resumed epoch reports the whole epoch, not its resumed part.
  double epoch_loss_sum = 0;
  double epoch_loss_count = 0;
  double epoch_images = 0;
  double epoch_seconds = 0;  // Training time of those steps.
  double elapsed_seconds = 0;  // Since training started, up to this checkpoint.

  // Samples of the epoch's permutation trained on so far (the shard ledger's position), for a
  // group of `world_size` (used when the checkpoint does not say).
  int64_t EpochSamplesDone(int64_t batch_size, int64_t dataset_size, int32_t current_world_size) const {
    const int64_t world = world_size > 0 ? world_size : current_world_size;
    return std::min(dataset_size, stage_start + world * step_in_epoch * batch_size);
  }
};

// The model's state (any kind of model), the optimizer's, the position and the CPU RNG.
absl::StatusOr<std::string> SerializeCheckpoint(const CheckpointableModel& model,
                                                torch::optim::Optimizer& optimizer,
                                                const TrainingPosition& position);
absl::StatusOr<std::string> SerializeCheckpoint(core::Classifier& model,
                                                torch::optim::Optimizer& optimizer,
                                                const TrainingPosition& position);

// A format-2 payload (safetensors) in its header and checksum: what SerializeCheckpoint
// returns for it (fuzz/checkpoint_fuzzer wraps its inputs with it).
std::string SealCheckpoint(const std::string& payload);

// The format-1 checkpoint Kennel wrote before 2026-12 (tests that old checkpoints restore).
absl::StatusOr<std::string> SerializeLegacyCheckpoint(const CheckpointableModel& model,
                                                      torch::optim::Optimizer& optimizer,
                                                      const TrainingPosition& position);

// Restores into an already built model and optimizer (same spec). A format-2 checkpoint is
// checked whole before anything changes. DATA_LOSS when the blob
// is damaged, INVALID_ARGUMENT when it belongs to a different model.
absl::Status RestoreCheckpoint(const std::string& blob, CheckpointableModel& model,
                               torch::optim::Optimizer& optimizer, TrainingPosition* position);
absl::Status RestoreCheckpoint(const std::string& blob, core::Classifier& model,
                               torch::optim::Optimizer& optimizer, TrainingPosition* position);

// Where a job's checkpoints are kept. Implementations are thread-safe.
class CheckpointStore {
 public:
  virtual ~CheckpointStore() = default;
  // Replaces the job's newest checkpoint (atomically: a crash keeps the previous one).
  virtual absl::Status Save(const std::string& blob, const TrainingPosition& position) = 0;
  // The newest checkpoint, or nullopt when the job has none.
  virtual absl::StatusOr<std::optional<std::string>> LoadLatest() = 0;
};

// Keeps checkpoints in a local folder (tests, single-machine runs).
class LocalCheckpointStore : public CheckpointStore {
 public:
  explicit LocalCheckpointStore(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Save(const std::string& blob, const TrainingPosition& position) override;
  absl::StatusOr<std::optional<std::string>> LoadLatest() override;

 private:
  std::string dir_;
};

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_CHECKPOINT_H_
