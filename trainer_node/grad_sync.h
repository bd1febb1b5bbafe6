// Gradient averaging for data parallelism, DDP-style: trainable parameters are grouped into
// flattened buckets (in reverse registration order, about the order backward produces
// their gradients; the first bucket capped at 1 MiB, the others at bucket_cap_bytes). A
// gradient hook copies each gradient into its bucket as backward produces it, and a
// communication thread all-reduces each bucket as soon as it is complete, overlapping
// communication with the rest of backward. Buckets are reduced in a fixed order, so every
// rank issues the same collectives in the same sequence. With a 16-bit wire type each bucket
// is scaled by 1/world_size, rounded to it, summed over ranks and widened back (DDP's
// fp16_compress_hook): half the bytes on the link.
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

class GradientSynchronizer {
 public:
  // `params`: the model's parameters in registration order; those without requires_grad
  // are left out. `comm` is not owned and outlives this object.
  static absl::StatusOr<std::unique_ptr<GradientSynchronizer>> Create(
      std::vector<torch::Tensor> params, Communicator* comm, int64_t bucket_cap_bytes,
      torch::ScalarType wire_type = torch::kFloat32);
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
    int bucket;
    int64_t offset;
    unsigned hook = 0;
  };
  struct Bucket {
    torch::Tensor flat;
    torch::Tensor wire;  // flat rounded to the wire type (undefined for float32).
    int pending = 0;
    int size = 0;  // Slots in the bucket.
    // This step's times: ready under mu_, the reduce's by the communication thread (read
    // after FinishStep, which waits for it under mu_).
    Clock::time_point ready, reduce_start, reduce_end;
  };

  GradientSynchronizer(Communicator* comm, torch::ScalarType wire_type) : comm_(comm), wire_type_(wire_type) {}
  void OnGradient(size_t slot, const torch::Tensor& grad);
  void CommLoop();
  absl::Status Reduce(Bucket& bucket);

  Communicator* comm_;
  const torch::ScalarType wire_type_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;  // Shape fixed at creation; pending guarded by mu_.
  absl::Mutex mu_;
  std::vector<bool> arrived_ ABSL_GUARDED_BY(mu_);
  int next_to_reduce_ ABSL_GUARDED_BY(mu_) = 0;
  int reduced_ ABSL_GUARDED_BY(mu_) = 0;
  bool in_step_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread comm_thread_;
};

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_GRAD_SYNC_H_
