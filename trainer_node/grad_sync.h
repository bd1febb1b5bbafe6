// Gradient averaging for data parallelism, DDP-style: trainable parameters are grouped into
// flattened buckets (in reverse registration order, about the order backward produces
// their gradients; the first bucket capped at 1 MiB, the others at bucket_cap_bytes). A
// gradient hook copies each gradient into its bucket as backward produces it, and a
// communication thread all-reduces each bucket as soon as it is complete, overlapping
// communication with the rest of backward. Buckets are reduced in a fixed order, so every
// rank issues the same collectives in the same sequence. With a 16-bit wire type each bucket
// is scaled by 1/world_size, rounded to it, summed over ranks and widened back (DDP's
// fp16_compress_hook): half the bytes on the link. With low-rank compression (PowerSGD, as
// DDP's powerSGD_hook with warm start), each weight matrix M (n x m) of a bucket travels as
// P = M Q, orthogonalized, and Q = M^T P, two all-reduces of r (n + m) floats; what P Q^T
// misses stays on the rank and joins its next gradient (error feedback). Other tensors (and
// every step before the warm-up ends) go as float32.
//
// Use per step: BeginStep(); loss.backward(); FinishStep() (then optimizer.step()).
// Owns the communication thread; the destructor stops it and removes the hooks.
#ifndef KENNEL_TRAINER_NODE_GRAD_SYNC_H_
#define KENNEL_TRAINER_NODE_GRAD_SYNC_H_

#include <torch/types.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "trainer_node/communicator.h"

namespace kennel::trainer {

// PowerSGD settings; rank 0 turns it off.
struct LowRankOptions {
  int rank = 0;
  int64_t warmup_steps = 0;  // Steps all-reduced uncompressed first...
  int64_t steps_done = 0;    // ...counting those a resumed run already took.
  uint64_t seed = 0;         // Seeds each matrix's first Q (the same on every rank).
};

class GradientSynchronizer {
 public:
  // `params`: the model's parameters in registration order; those without requires_grad
  // are left out. `comm` is not owned and outlives this object.
  using LowRank = LowRankOptions;
  static absl::StatusOr<std::unique_ptr<GradientSynchronizer>> Create(
      std::vector<torch::Tensor> params, Communicator* comm, int64_t bucket_cap_bytes,
      torch::ScalarType wire_type = torch::kFloat32, LowRankOptions low_rank = LowRankOptions());
  ~GradientSynchronizer();

  void BeginStep();
  // Waits for every bucket, then writes the mean gradient over ranks into each parameter's
  // .grad. A parameter that got no gradient this step counts as zero (every rank still
  // reduces its bucket).
  absl::Status FinishStep();

  int num_buckets() const { return static_cast<int>(buckets_.size()); }

  // When each bucket of the last finished step was ready, and its all-reduce began and ended,
  // in reduction order (empty with one rank: nothing is reduced). For the step timeline.
  using Clock = std::chrono::steady_clock;
  struct BucketTimes {
    int64_t wire_bytes = 0;
    Clock::time_point ready, reduce_start, reduce_end;
  };
  std::vector<BucketTimes> LastStepTimes() const;

 private:
  struct Slot {
    torch::Tensor param;
    int bucket = 0;
    int64_t offset = 0;
    unsigned hook = 0;
    // PowerSGD: the gradient as an n x m matrix, factors of rank r; q (m x r) carried from
    // step to step, error (n x m) what the last approximation missed. Undefined: sent whole.
    int64_t n = 0, m = 0, r = 0;
    torch::Tensor q, error;
  };
  struct Bucket {
    torch::Tensor flat;
    torch::Tensor wire;  // flat rounded to the wire type (undefined for float32).
    int pending = 0;
    int size = 0;  // Slots in the bucket.
    std::vector<size_t> slots;
    int64_t low_rank_bytes = 0;  // Sent per step once PowerSGD runs.
    int64_t sent_bytes = 0;      // In the last step.
    // This step's times: ready under mu_, the reduce's by the communication thread (read
    // after FinishStep, which waits for it under mu_).
    Clock::time_point ready, reduce_start, reduce_end;
  };

  GradientSynchronizer(Communicator* comm, torch::ScalarType wire_type) : comm_(comm), wire_type_(wire_type) {}
  void OnGradient(size_t slot, const torch::Tensor& grad);
  void CommLoop();
  absl::Status Reduce(Bucket& bucket, bool low_rank);
  absl::Status ReduceLowRank(Bucket& bucket);

  Communicator* comm_;
  const torch::ScalarType wire_type_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;  // Shape fixed at creation; pending guarded by mu_.
  absl::Mutex mu_;
  std::vector<bool> arrived_ ABSL_GUARDED_BY(mu_);
  int next_to_reduce_ ABSL_GUARDED_BY(mu_) = 0;
  int reduced_ ABSL_GUARDED_BY(mu_) = 0;
  bool in_step_ ABSL_GUARDED_BY(mu_) = false;
  LowRank low_rank_;
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;  // Steps begun, counting low_rank_.steps_done.
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread comm_thread_;
};

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_GRAD_SYNC_H_
