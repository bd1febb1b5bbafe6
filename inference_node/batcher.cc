#include "inference_node/batcher.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "inference_node/thread_pool.h"

namespace kennel::inference {

DynamicBatcher::DynamicBatcher(BatcherOptions options, BatchModel* model, Clock* clock,
                               BatchObserver observer, CompletionExecutor completions)
    : options_(options), model_(model), clock_(clock), observer_(std::move(observer)),
      completions_(std::move(completions)) {
  thread_ = std::thread([this] { Loop(); });
  NameThread(thread_, "kennel-batch");
}

DynamicBatcher::~DynamicBatcher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

absl::Status DynamicBatcher::Enqueue(BatchItem item) {
  absl::MutexLock lock(&mu_);
  if (stop_) return absl::UnavailableError("model instance is shutting down");
  if (static_cast<int>(queue_.size()) >= options_.max_queue_size) {
    return absl::ResourceExhaustedError(
        absl::StrCat("inference queue full (", options_.max_queue_size, " requests); retry later"));
  }
  queue_.push_back({std::move(item), clock_->Now()});
  return absl::OkStatus();
}

int DynamicBatcher::queue_depth() {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

void DynamicBatcher::Poke() {
  absl::MutexLock lock(&mu_);
  ++pokes_;
}

void DynamicBatcher::Loop() {
  const size_t max_batch = static_cast<size_t>(options_.max_batch_size);
  while (true) {
    std::vector<Queued> batch;
    {
      absl::MutexLock lock(&mu_);
      auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&work));
      if (queue_.empty()) return;  // Stopping with nothing left.
      // Wait for a full batch, the oldest request's delay, or shutdown.
      while (!stop_ && queue_.size() < max_batch) {
        const absl::Time due = queue_.front().enqueued + options_.max_queue_delay;
        const absl::Time now = clock_->Now();
        if (now >= due) break;
        const int64_t seen = pokes_;
        auto wake = [this, seen, max_batch]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || queue_.size() >= max_batch || pokes_ != seen;
        };
        mu_.AwaitWithTimeout(absl::Condition(&wake), due - now);
      }
      const size_t n = std::min(max_batch, queue_.size());
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    RunBatch(std::move(batch));
  }
}

void DynamicBatcher::RunBatch(std::vector<Queued> batch) {
  const absl::Time start = clock_->Now();
  std::vector<Queued> live;
  for (auto& q : batch) {
    if (q.item.deadline <= start) {
      q.item.done(absl::DeadlineExceededError("deadline passed while queued; not run"));
    } else {
      live.push_back(std::move(q));
    }
  }
  if (live.empty()) return;
  std::vector<torch::Tensor> inputs;
  inputs.reserve(live.size());
  for (const auto& q : live) inputs.push_back(q.item.input);
  absl::StatusOr<torch::Tensor> out = model_->Run(torch::stack(inputs));
  const absl::Time end = clock_->Now();
  if (observer_) observer_(static_cast<int>(live.size()), end - start);
  auto complete = [live = std::move(live), out = std::move(out), start, end]() mutable {
    for (size_t i = 0; i < live.size(); ++i) {
      if (!out.ok()) {
        live[i].item.done(out.status());
        continue;
      }
      live[i].item.done(BatchResult{(*out)[static_cast<int64_t>(i)], static_cast<int>(live.size()),
                                    start - live[i].enqueued, end - start});
    }
  };
  if (completions_) {
    completions_(std::move(complete));
  } else {
    complete();
  }
}

}  // namespace kennel::inference
