#include "inference_node/admission.h"

#include <algorithm>

namespace kennel::inference {

bool AdmissionGate::Acquire(const std::shared_ptr<Waiter>& waiter) {
  absl::MutexLock lock(&mu_);
  if (in_use_ < capacity_ && waiters_.empty()) {
    ++in_use_;
    return true;
  }
  if (waiter) waiters_.push_back(waiter);
  return false;
}

void AdmissionGate::Release() {
  std::shared_ptr<Waiter> next;
  {
    absl::MutexLock lock(&mu_);
    if (waiters_.empty()) {
      --in_use_;
      return;
    }
    next = std::move(waiters_.front());  // The slot passes to it: in_use_ is unchanged.
    waiters_.pop_front();
  }
  next->on_slot();
}

bool AdmissionGate::Cancel(const std::shared_ptr<Waiter>& waiter) {
  absl::MutexLock lock(&mu_);
  auto it = std::find(waiters_.begin(), waiters_.end(), waiter);
  if (it == waiters_.end()) return false;
  waiters_.erase(it);
  return true;
}

int AdmissionGate::in_use() {
  absl::MutexLock lock(&mu_);
  return in_use_;
}

int AdmissionGate::waiting() {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(waiters_.size());
}

}  // namespace kennel::inference
