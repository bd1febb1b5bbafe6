// Dynamic batching in the manner of Triton's dynamic batch scheduler: requests queue up to
// max_queue_size in ONE queue shared by every model instance; each instance has a thread that,
// whenever it is free, takes a batch from the front: as soon as max_batch_size requests wait,
// or when the oldest has waited max_queue_delay, whichever comes first. So a request never
// waits behind a busy instance while another is idle, and a busy node's instances each take
// whatever has queued while they ran. Requests whose deadline has passed are answered
// DEADLINE_EXCEEDED before inference and never reach the model.
//
// Enqueue never blocks (RESOURCE_EXHAUSTED when full). Completion callbacks run on the
// CompletionExecutor (or the instance's thread) and must not block. The destructor answers
// everything still queued (runs it) and joins.
#ifndef KENNEL_INFERENCE_NODE_BATCHER_H_
#define KENNEL_INFERENCE_NODE_BATCHER_H_

#include <torch/types.h>

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kennel::inference {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
};

class RealClock : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
};

// Runs a batch [N, C, H, W] -> class probabilities [N, K] (float32, contiguous, on the CPU).
// Called from one thread at a time.
class BatchModel {
 public:
  virtual ~BatchModel() = default;
  // Where the batcher assembles a batch of `n` inputs of `item_shape` (float32): a fresh CPU
  // tensor unless the model has a better place (a pinned staging buffer for a CUDA upload).
  // Valid until the next call; Run is called with it.
  virtual torch::Tensor NewBatch(int64_t n, c10::IntArrayRef item_shape);
  virtual absl::StatusOr<torch::Tensor> Run(const torch::Tensor& batch) = 0;
};

struct BatchResult {
  // The whole batch's output [N, K]: shared by the batch's requests (no tensor per request);
  // this request's row is `row`.
  torch::Tensor probabilities;
  int64_t row = 0;
  int batch_size = 0;
  absl::Duration queue_time;
  absl::Duration inference_time;

  const float* row_data() const { return probabilities.data_ptr<float>() + row * probabilities.size(1); }
  int64_t num_classes() const { return probabilities.size(1); }
  torch::Tensor Row() const { return probabilities[row]; }
};

struct BatchItem {
  torch::Tensor input;  // [C, H, W] float32.
  absl::Time deadline = absl::InfiniteFuture();
  std::function<void(absl::StatusOr<BatchResult>)> done;
};

struct BatcherOptions {
  int max_batch_size = 32;
  // 0: run whatever is queued as soon as the instance is free (batches fill while the
  // previous one runs); a positive delay trades latency for fuller batches.
  absl::Duration max_queue_delay = absl::ZeroDuration();
  int max_queue_size = 1024;  // The shared queue's bound, whatever the instance count.
};

// Told about every batch formed (metrics). Called on the batcher thread.
using BatchObserver = std::function<void(int batch_size, absl::Duration inference_time)>;

// Runs a batch's completion callbacks elsewhere, so the batcher thread can start the next
// batch while responses are built and written. Null: callbacks run on the batcher thread.
using CompletionExecutor = std::function<void(std::function<void()>)>;

class DynamicBatcher {
 public:
  // One thread per model instance, all taking batches from the one queue.
  DynamicBatcher(BatcherOptions options, std::vector<BatchModel*> instances, Clock* clock,
                 BatchObserver observer = nullptr, CompletionExecutor completions = nullptr);
  DynamicBatcher(BatcherOptions options, BatchModel* model, Clock* clock, BatchObserver observer = nullptr,
                 CompletionExecutor completions = nullptr)
      : DynamicBatcher(options, std::vector<BatchModel*>{model}, clock, std::move(observer),
                       std::move(completions)) {}
  ~DynamicBatcher();
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  absl::Status Enqueue(BatchItem item);
  int queue_depth();
  // Re-checks the clock now (tests with a fake clock call it after advancing time).
  void Poke();

 private:
  struct Queued {
    BatchItem item;
    absl::Time enqueued;
  };
  void Loop(BatchModel* model);
  void RunBatch(BatchModel* model, std::vector<Queued> batch);

  const BatcherOptions options_;
  Clock* const clock_;
  BatchObserver observer_;
  CompletionExecutor completions_;
  absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t pokes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> threads_;
};

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_BATCHER_H_
