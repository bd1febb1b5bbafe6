// The node-wide limit on requests inside the engine (preprocessing and batcher queues):
// ClassifyStream reactors take a slot before reading the next request and give it back when
// that request's answer is ready, so streams pause reading (gRPC flow control pushes back on
// the client) instead of the engine refusing valid requests with RESOURCE_EXHAUSTED. Unary
// calls take a slot or are refused at once (a unary caller cannot be paused).
//
// Waiting is by callback, never by blocking a thread: a reactor that finds no slot leaves a
// Waiter, whose callback runs (on the releasing thread, slot already taken for it) when one
// frees. Thread-safe.
#ifndef KENNEL_INFERENCE_NODE_ADMISSION_H_
#define KENNEL_INFERENCE_NODE_ADMISSION_H_

#include <deque>
#include <functional>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kennel::inference {

class AdmissionGate {
 public:
  struct Waiter {
    std::function<void()> on_slot;  // Must not block; may run on any thread.
  };

  explicit AdmissionGate(int capacity) : capacity_(capacity) {}

  // A slot now (true). Otherwise, when `waiter` is given, it is queued (FIFO) and called once
  // a slot is its; false either way.
  bool Acquire(const std::shared_ptr<Waiter>& waiter = nullptr);
  // Gives a slot back: to the longest waiter, else to the pool.
  void Release();
  // Withdraws `waiter`; true if it was still queued (it holds no slot and will not be
  // called), false if it was already handed a slot (its callback has run or is running).
  bool Cancel(const std::shared_ptr<Waiter>& waiter);

  int capacity() const { return capacity_; }
  int in_use();
  int waiting();

 private:
  const int capacity_;
  absl::Mutex mu_;
  int in_use_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::shared_ptr<Waiter>> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_ADMISSION_H_
