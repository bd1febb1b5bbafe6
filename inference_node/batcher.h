// Dynamic batching in the manner of Triton's dynamic batch scheduler: requests queue up to
// max_queue_size; the batcher thread runs a batch as soon as max_batch_size requests wait,
// or when the oldest has waited max_queue_delay, whichever comes first. Requests whose
// deadline has passed are answered DEADLINE_EXCEEDED before inference and never reach the
// model. One batcher per model instance; it owns one thread.
//
// Enqueue never blocks (RESOURCE_EXHAUSTED when full). Completion callbacks run on the
// CompletionExecutor (or the batcher thread) and must not block. The destructor answers everything still queued (runs
// it) and joins.
#ifndef KENNEL_INFERENCE_NODE_BATCHER_H_
#define KENNEL_INFERENCE_NODE_BATCHER_H_

#include <torch/types.h>

#include <deque>
#include <functional>
#include <thread>

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

// Runs a batch [N, C, H, W] -> class probabilities [N, K]. Called from one thread at a time.
class BatchModel {
 public:
  virtual ~BatchModel() = default;
  virtual absl::StatusOr<torch::Tensor> Run(const torch::Tensor& batch) = 0;
};

struct BatchResult {
  torch::Tensor probabilities;  // [K] for this request.
  int batch_size = 0;
  absl::Duration queue_time;
  absl::Duration inference_time;
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
  int max_queue_size = 1024;
};

// Told about every batch formed (metrics). Called on the batcher thread.
using BatchObserver = std::function<void(int batch_size, absl::Duration inference_time)>;

// Runs a batch's completion callbacks elsewhere, so the batcher thread can start the next
// batch while responses are built and written. Null: callbacks run on the batcher thread.
using CompletionExecutor = std::function<void(std::function<void()>)>;

class DynamicBatcher {
 public:
  DynamicBatcher(BatcherOptions options, BatchModel* model, Clock* clock, BatchObserver observer = nullptr,
                 CompletionExecutor completions = nullptr);
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
  void Loop();
  void RunBatch(std::vector<Queued> batch);

  const BatcherOptions options_;
  BatchModel* const model_;
  Clock* const clock_;
  BatchObserver observer_;
  CompletionExecutor completions_;
  absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t pokes_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_BATCHER_H_
