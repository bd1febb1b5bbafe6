#include "coordinator/state_writer.h"

#include "core/logging.h"

#include <memory>
#include <utility>

namespace kennel::coordinator {

StateWriter::StateWriter(StateStore* state) : state_(state) {
  thread_ = std::thread([this] { Loop(); });
}

StateWriter::~StateWriter() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();  // Loop writes what is queued first.
}

int64_t StateWriter::Enqueue(std::function<absl::Status()> write) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(write));
  return ++queued_;
}

void StateWriter::WaitFor(int64_t sequence) {
  absl::MutexLock lock(&mu_);
  auto written = [this, sequence]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return written_ >= sequence; };
  mu_.Await(absl::Condition(&written));
}

void StateWriter::UpdateJob(v1::JobStatus status, std::string event) {
  Enqueue([this, status = std::move(status), event = std::move(event)] {
    absl::Status s = state_->UpdateJob(status, event);
    if (!s.ok()) LOG(ERROR) << "persisting job " << status.id() << ": " << s;
    return s;
  });
}

void StateWriter::SaveNode(v1::NodeStatus status) {
  Enqueue([this, status = std::move(status)] {
    absl::Status s = state_->SaveNode(status);
    if (!s.ok()) LOG(ERROR) << "persisting node " << status.name() << ": " << s;
    return s;
  });
}

absl::Status StateWriter::UpdateJobAndWait(v1::JobStatus status, std::string event) {
  auto result = std::make_shared<absl::Status>();
  const int64_t sequence = Enqueue([this, result, status = std::move(status), event = std::move(event)] {
    *result = state_->UpdateJob(status, event);
    if (!result->ok()) LOG(ERROR) << "persisting job " << status.id() << ": " << *result;
    return *result;
  });
  WaitFor(sequence);
  return *result;
}

void StateWriter::Flush() {
  int64_t sequence;
  {
    absl::MutexLock lock(&mu_);
    sequence = queued_;
  }
  WaitFor(sequence);
}

void StateWriter::Loop() {
  while (true) {
    std::function<absl::Status()> write;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // Stopping, and everything is written.
      write = std::move(queue_.front());
      queue_.pop_front();
    }
    write().IgnoreError();  // Logged by the write itself.
    absl::MutexLock lock(&mu_);
    ++written_;
  }
}

}  // namespace kennel::coordinator
