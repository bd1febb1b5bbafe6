#include "inference_node/thread_pool.h"

#include <pthread.h>

#include "absl/strings/str_cat.h"

namespace kennel::inference {

void NameThread(std::thread& thread, const std::string& name) {
  pthread_setname_np(thread.native_handle(), name.substr(0, 15).c_str());
}

ThreadPool::ThreadPool(int threads, int max_queue, const std::string& name)
    : max_queue_(static_cast<size_t>(max_queue)) {
  for (int i = 0; i < std::max(1, threads); ++i) {
    threads_.emplace_back([this] { Worker(); });
    NameThread(threads_.back(), absl::StrCat(name, "-", i));
  }
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (auto& t : threads_) t.join();
}

bool ThreadPool::TrySubmit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stop_ || tasks_.size() >= max_queue_) return false;
  tasks_.push_back(std::move(task));
  return true;
}

int ThreadPool::queue_depth() {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(tasks_.size());
}

void ThreadPool::Worker() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !tasks_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace kennel::inference
