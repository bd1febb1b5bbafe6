#include "inference_node/batcher.h"

#include <torch/torch.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "inference_node/thread_pool.h"

namespace kennel::inference {

torch::Tensor BatchModel::NewBatch(int64_t n, c10::IntArrayRef item_shape) {
  std::vector<int64_t> shape = {n};
  shape.insert(shape.end(), item_shape.begin(), item_shape.end());
  return torch::empty(shape, torch::kFloat);
}

DynamicBatcher::DynamicBatcher(BatcherOptions options, std::vector<BatchModel*> instances, Clock* clock,
                               BatchObserver observer, CompletionExecutor completions)
    : options_(options), clock_(clock), observer_(std::move(observer)), completions_(std::move(completions)) {
  for (size_t i = 0; i < instances.size(); ++i) {
    BatchModel* model = instances[i];
    threads_.emplace_back([this, model] { Loop(model); });
    NameThread(threads_.back(), absl::StrCat("kennel-batch-", i));
  }
}

DynamicBatcher::~DynamicBatcher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (auto& t : threads_) t.join();
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

// One instance's thread. Only a free instance waits here, so whichever is free first takes
// the next batch; the others may find the queue emptied meanwhile and wait again.
void DynamicBatcher::Loop(BatchModel* model) {
  const size_t max_batch = static_cast<size_t>(options_.max_batch_size);
  while (true) {
    std::vector<Queued> batch;
    {
      absl::MutexLock lock(&mu_);
      auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&work));
      if (queue_.empty()) return;  // Stopping with nothing left.
      // Wait for a full batch, the oldest request's delay, or shutdown.
      while (!stop_ && !queue_.empty() && queue_.size() < max_batch) {
        const absl::Time due = queue_.front().enqueued + options_.max_queue_delay;
        const absl::Time now = clock_->Now();
        if (now >= due) break;
        const int64_t seen = pokes_;
        auto wake = [this, seen, max_batch]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || queue_.empty() || queue_.size() >= max_batch || pokes_ != seen;
        };
        mu_.AwaitWithTimeout(absl::Condition(&wake), due - now);
      }
      if (queue_.empty()) continue;  // Another instance took it.
      const size_t n = std::min(max_batch, queue_.size());
      batch.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    RunBatch(model, std::move(batch));
  }
}

void DynamicBatcher::RunBatch(BatchModel* model, std::vector<Queued> batch) {
  const absl::Time start = clock_->Now();
  std::vector<Queued> live;
  live.reserve(batch.size());
  const std::vector<int64_t> shape = batch.front().item.input.sizes().vec();
  for (auto& q : batch) {
    if (q.item.deadline <= start) {
      q.item.done(absl::DeadlineExceededError("deadline passed while queued; not run"));
    } else if (q.item.input.sizes() != c10::IntArrayRef(shape) || q.item.input.scalar_type() != torch::kFloat) {
      q.item.done(absl::InternalError("an input's shape or type differs from its batch's"));  // The engine checks.
    } else {
      live.push_back(std::move(q));
    }
  }
  if (live.empty()) return;
  // The batch is assembled where the model wants it (for a CUDA model, pinned memory it
  // uploads from); each input is copied once, as torch::stack would.
  const torch::Tensor& first = live.front().item.input;
  torch::Tensor input = model->NewBatch(static_cast<int64_t>(live.size()), first.sizes());
  float* dst = input.data_ptr<float>();
  const int64_t item_floats = first.numel();
  for (const auto& q : live) {
    std::memcpy(dst, q.item.input.contiguous().data_ptr<float>(), static_cast<size_t>(item_floats) * sizeof(float));
    dst += item_floats;
  }
  absl::StatusOr<torch::Tensor> out = model->Run(input);
  if (out.ok() && !out->is_contiguous()) out = out->contiguous();  // BatchResult reads rows by offset.
  const absl::Time end = clock_->Now();
  if (observer_) observer_(static_cast<int>(live.size()), end - start);
  auto complete = [live = std::move(live), out = std::move(out), start, end]() mutable {
    for (size_t i = 0; i < live.size(); ++i) {
      if (!out.ok()) {
        live[i].item.done(out.status());
        continue;
      }
      live[i].item.done(BatchResult{*out, static_cast<int64_t>(i), static_cast<int>(live.size()),
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
