#include "inference_node/batcher.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <thread>

namespace kennel::inference {
namespace {

class FakeClock : public Clock {
 public:
  absl::Time Now() override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

// Returns each input's first value as its "probability" row, and records batch sizes.
class FakeModel : public BatchModel {
 public:
  absl::StatusOr<torch::Tensor> Run(const torch::Tensor& batch) override {
    absl::MutexLock lock(&mu_);
    sizes_.push_back(static_cast<int>(batch.size(0)));
    return batch.reshape({batch.size(0), -1}).narrow(1, 0, 1).clone();
  }
  std::vector<int> sizes() {
    absl::MutexLock lock(&mu_);
    return sizes_;
  }

 private:
  absl::Mutex mu_;
  std::vector<int> sizes_;
};

// Collects completions.
struct Results {
  absl::Mutex mu;
  std::map<int, std::vector<absl::StatusOr<BatchResult>>> by_id;
  int count() {
    absl::MutexLock lock(&mu);
    int n = 0;
    for (auto& [id, v] : by_id) n += static_cast<int>(v.size());
    return n;
  }
  void WaitFor(int n) {
    absl::MutexLock lock(&mu);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      int c = 0;
      for (auto& [id, v] : by_id) c += static_cast<int>(v.size());
      return c >= n;
    };
    mu.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(30));
  }
};

BatchItem Item(int id, Results& results, absl::Time deadline = absl::InfiniteFuture()) {
  return BatchItem{torch::full({1, 2, 2}, static_cast<float>(id)), deadline,
                   [&results, id](absl::StatusOr<BatchResult> r) {
                     absl::MutexLock lock(&results.mu);
                     results.by_id[id].push_back(std::move(r));
                   }};
}

TEST(DynamicBatcherTest, WaitsForTheMaxDelayThenRunsWhatIsQueued) {
  FakeClock clock;
  FakeModel model;
  Results results;
  DynamicBatcher batcher({.max_batch_size = 8, .max_queue_delay = absl::Milliseconds(10)}, &model, &clock);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(batcher.Enqueue(Item(i, results)).ok());
  // No time has passed on the batcher's clock: nothing may run, however long we wait.
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_TRUE(model.sizes().empty());
  clock.Advance(absl::Milliseconds(9));
  batcher.Poke();
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_TRUE(model.sizes().empty());
  clock.Advance(absl::Milliseconds(1));
  batcher.Poke();
  results.WaitFor(3);
  EXPECT_EQ(model.sizes(), std::vector<int>{3});
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(results.by_id[i][0].ok());
    EXPECT_EQ(results.by_id[i][0]->batch_size, 3);
    EXPECT_EQ(results.by_id[i][0]->Row().item<float>(), static_cast<float>(i));  // Own row.
    EXPECT_EQ(results.by_id[i][0]->queue_time, absl::Milliseconds(10));
  }
}

TEST(DynamicBatcherTest, FullBatchRunsWithoutWaiting) {
  FakeClock clock;
  FakeModel model;
  Results results;
  DynamicBatcher batcher({.max_batch_size = 4, .max_queue_delay = absl::Hours(1)}, &model, &clock);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(batcher.Enqueue(Item(i, results)).ok());
  results.WaitFor(8);
  EXPECT_EQ(results.count(), 8);  // Two full batches; the remaining 2 wait for the delay.
  clock.Advance(absl::Hours(1));
  batcher.Poke();
  results.WaitFor(10);
  EXPECT_EQ(model.sizes(), (std::vector<int>{4, 4, 2}));
}

TEST(DynamicBatcherTest, EveryRequestIsAnsweredExactlyOnce) {
  RealClock clock;
  FakeModel model;
  Results results;
  {
    DynamicBatcher batcher({.max_batch_size = 16, .max_queue_delay = absl::Microseconds(500)}, &model, &clock);
    std::vector<std::thread> producers;
    for (int t = 0; t < 4; ++t) {
      producers.emplace_back([&, t] {
        for (int i = 0; i < 250; ++i) ASSERT_TRUE(batcher.Enqueue(Item(t * 1000 + i, results)).ok());
      });
    }
    for (auto& p : producers) p.join();
  }  // The destructor drains the queue.
  EXPECT_EQ(results.count(), 1000);
  for (auto& [id, v] : results.by_id) {
    ASSERT_EQ(v.size(), 1u) << id;
    ASSERT_TRUE(v[0].ok());
    EXPECT_EQ(v[0]->Row().item<float>(), static_cast<float>(id));
  }
  const std::vector<int> sizes = model.sizes();
  int total = 0;
  for (int s : sizes) {
    EXPECT_LE(s, 16);
    total += s;
  }
  EXPECT_EQ(total, 1000);
  EXPECT_GT(*std::max_element(sizes.begin(), sizes.end()), 1);  // It did batch.
}

TEST(DynamicBatcherTest, ExpiredRequestsAreAnsweredDeadlineExceededAndNotRun) {
  FakeClock clock;
  FakeModel model;
  Results results;
  DynamicBatcher batcher({.max_batch_size = 8, .max_queue_delay = absl::Milliseconds(5)}, &model, &clock);
  ASSERT_TRUE(batcher.Enqueue(Item(1, results, clock.Now() + absl::Milliseconds(2))).ok());
  ASSERT_TRUE(batcher.Enqueue(Item(2, results, clock.Now() + absl::Seconds(1))).ok());
  clock.Advance(absl::Milliseconds(5));
  batcher.Poke();
  results.WaitFor(2);
  EXPECT_EQ(results.by_id[1][0].status().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(results.by_id[2][0].ok());
  EXPECT_EQ(model.sizes(), std::vector<int>{1});
}

TEST(DynamicBatcherTest, FullQueueIsResourceExhausted) {
  FakeClock clock;
  FakeModel model;
  Results results;
  DynamicBatcher batcher({.max_batch_size = 100, .max_queue_delay = absl::Hours(1), .max_queue_size = 3},
                         &model, &clock);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(batcher.Enqueue(Item(i, results)).ok());
  EXPECT_EQ(batcher.Enqueue(Item(3, results)).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(batcher.queue_depth(), 3);
}

// Holds every batch whose first value is negative until released; counts the batches it ran.
class GatedModel : public BatchModel {
 public:
  absl::StatusOr<torch::Tensor> Run(const torch::Tensor& batch) override {
    const bool gated = batch.flatten()[0].item<float>() < 0;
    absl::MutexLock lock(&mu_);
    ++runs_;
    if (gated) {
      holding_ = true;
      mu_.Await(absl::Condition(&released_));
      holding_ = false;
    }
    return batch.reshape({batch.size(0), -1}).narrow(1, 0, 1).clone();
  }
  void WaitUntilHolding() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&holding_));
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }
  int runs() {
    absl::MutexLock lock(&mu_);
    return runs_;
  }

 private:
  absl::Mutex mu_;
  bool holding_ ABSL_GUARDED_BY(mu_) = false;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  int runs_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST(DynamicBatcherTest, ARequestGoesToAnIdleInstanceNotBehindABusyOne) {
  RealClock clock;
  GatedModel a, b;
  Results results;
  DynamicBatcher batcher({.max_batch_size = 4}, std::vector<BatchModel*>{&a, &b}, &clock);
  ASSERT_TRUE(batcher.Enqueue(Item(-1, results)).ok());  // Holds whichever instance takes it.
  GatedModel& busy = [&]() -> GatedModel& {
    while (a.runs() + b.runs() == 0) absl::SleepFor(absl::Milliseconds(1));
    return a.runs() > 0 ? a : b;
  }();
  busy.WaitUntilHolding();
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(batcher.Enqueue(Item(i, results)).ok());
    results.WaitFor(i);  // Answered while the other instance is still held.
  }
  EXPECT_EQ(results.count(), 3);
  EXPECT_EQ(results.by_id.count(-1), 0u);
  EXPECT_EQ(busy.runs(), 1);
  a.Release();
  b.Release();
  results.WaitFor(4);
  ASSERT_EQ(results.by_id[-1].size(), 1u);
  EXPECT_TRUE(results.by_id[-1][0].ok());
}

TEST(DynamicBatcherTest, SeveralInstancesAnswerEveryRequestExactlyOnce) {
  RealClock clock;
  FakeModel a, b, c;
  Results results;
  {
    DynamicBatcher batcher({.max_batch_size = 8}, std::vector<BatchModel*>{&a, &b, &c}, &clock);
    std::vector<std::thread> producers;
    for (int t = 0; t < 3; ++t) {
      producers.emplace_back([&, t] {
        for (int i = 0; i < 300; ++i) ASSERT_TRUE(batcher.Enqueue(Item(t * 1000 + i, results)).ok());
      });
    }
    for (auto& p : producers) p.join();
  }
  EXPECT_EQ(results.count(), 900);
  for (auto& [id, v] : results.by_id) {
    ASSERT_EQ(v.size(), 1u) << id;
    ASSERT_TRUE(v[0].ok());
    EXPECT_EQ(v[0]->Row().item<float>(), static_cast<float>(id));  // Its own row of its batch.
  }
  int total = 0;
  for (FakeModel* m : {&a, &b, &c}) {
    for (int s : m->sizes()) total += s;
  }
  EXPECT_EQ(total, 900);
}

}  // namespace
}  // namespace kennel::inference
