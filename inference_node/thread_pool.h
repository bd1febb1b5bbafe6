// A fixed pool of worker threads with a bounded task queue (the inference node's
// preprocessing pool). TrySubmit never blocks: it refuses when the queue is full. The
// destructor runs what is queued and joins.
#ifndef KENNEL_INFERENCE_NODE_THREAD_POOL_H_
#define KENNEL_INFERENCE_NODE_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kennel::inference {

class ThreadPool {
 public:
  // `name` names the threads for top -H, perf and debuggers ("name-0", ...; 15 chars at most).
  ThreadPool(int threads, int max_queue, const std::string& name = "kennel-pool");
  ~ThreadPool();
  bool TrySubmit(std::function<void()> task);
  int queue_depth();

 private:
  void Worker();
  const size_t max_queue_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Names `thread` (truncated to the 15 characters Linux keeps).
void NameThread(std::thread& thread, const std::string& name);

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_THREAD_POOL_H_
