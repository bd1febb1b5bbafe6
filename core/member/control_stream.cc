#include "core/member/control_stream.h"

#include <unistd.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/logging.h"

namespace kennel::core {
namespace {

constexpr absl::Duration kSayUnregisteredEvery = absl::Seconds(30);

}  // namespace

std::string NewIncarnation() {
  std::random_device rd;
  const uint64_t r = (uint64_t{rd()} << 32) ^ rd();
  return absl::StrCat(absl::Hex(r, absl::kZeroPad16), "-", ::getpid());
}

ControlStream::ControlStream(v1::Coordinator::Stub* stub, std::string description,
                             ControlStreamCallbacks callbacks)
    : stub_(stub), description_(std::move(description)), callbacks_(std::move(callbacks)) {
  reader_ = std::thread([this] { ReadLoop(); });
  writer_ = std::thread([this] { WriteLoop(); });
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
}

ControlStream::~ControlStream() {
  Stop();
  reader_.join();
  writer_.join();
  heartbeat_.join();
}

void ControlStream::Stop() {
  absl::MutexLock lock(&mu_);
  stop_ = true;
  if (context_) context_->TryCancel();  // Unblocks a connect, the hello write and reads.
}

bool ControlStream::connected() {
  absl::MutexLock lock(&mu_);
  return connected_;
}

void ControlStream::Send(const v1::TrainerMessage& message, bool keep) {
  absl::MutexLock lock(&mu_);
  if (stop_) return;
  if (connected_) {
    outbox_.push_back(message);
    if (keep) {
      // Kept until written: a stream that breaks first hands it to the next one.
      kept_.push_back(message);
      if (kept_.size() > kMaxKept) kept_.pop_front();
    }
    return;
  }
  if (!keep) return;  // Stale by the time a stream is back.
  kept_.push_back(message);
  if (kept_.size() > kMaxKept) kept_.pop_front();
}

void ControlStream::HeartbeatLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), heartbeat_interval_)) return;
      if (!connected_) {
        if (absl::Now() - said_unregistered_ >= kSayUnregisteredEvery) {
          said_unregistered_ = absl::Now();
          LOG(WARNING) << description_ << ": not registered with the coordinator for "
                       << absl::FormatDuration(absl::Trunc(absl::Now() - unregistered_since_, absl::Seconds(1)))
                       << "; still trying (is it up, and is --coordinator its address?)";
        }
        continue;
      }
    }
    v1::TrainerMessage message;
    *message.mutable_heartbeat() = callbacks_.make_heartbeat();
    Send(message);
  }
}

void ControlStream::WriteLoop() {
  while (true) {
    v1::TrainerMessage message;
    std::shared_ptr<Stream> stream;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || (connected_ && !outbox_.empty());
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      message = std::move(outbox_.front());
      outbox_.pop_front();
      stream = stream_;
      writing_ = true;
    }
    const bool ok = stream->Write(message);  // Blocking, on this thread only.
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (ok && !kept_.empty()) {
      // Written: no longer needs keeping (kept messages are written in order).
      for (auto it = kept_.begin(); it != kept_.end(); ++it) {
        if (it->SerializeAsString() == message.SerializeAsString()) {
          kept_.erase(it);
          break;
        }
      }
    }
  }
}

void ControlStream::ReadLoop() {
  const std::string incarnation = NewIncarnation();
  absl::Duration backoff = absl::Milliseconds(200);
  while (true) {
    auto context = std::make_shared<grpc::ClientContext>();
    context->set_wait_for_ready(true);
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      context_ = context;
    }
    // Opening the stream and writing Register wait for the coordinator (wait_for_ready)
    // without holding any lock: Stop() cancels them, Send() keeps queueing meanwhile.
    std::shared_ptr<Stream> stream(stub_->TrainerControl(context.get()));
    {
      absl::MutexLock lock(&mu_);
      stream_ = stream;
    }
    // Register says what the member is doing now, not when it began waiting: a job that
    // ended during an outage must not be reported as still running (its Idle, sent while
    // disconnected, would be the only correction).
    v1::TrainerMessage hello;
    *hello.mutable_register_() = callbacks_.make_register();
    hello.mutable_register_()->set_incarnation(incarnation);
    grpc::Status status;
    if (stream->Write(hello)) {
      v1::CoordinatorMessage message;
      while (stream->Read(&message)) {  // Only this thread reads.
        if (message.has_ack()) {
          LOG(INFO) << description_ << " registered with the coordinator";
          backoff = absl::Milliseconds(200);
          absl::MutexLock lock(&mu_);
          heartbeat_interval_ = absl::Milliseconds(std::max(100, message.ack().heartbeat_interval_ms()));
          connected_ = true;
          // What was kept through the outage goes first; it stays kept until written.
          outbox_.insert(outbox_.begin(), kept_.begin(), kept_.end());
          continue;
        }
        callbacks_.on_message(message);
      }
    }
    {
      // Finish needs the stream to itself: take it from the writer first.
      absl::MutexLock lock(&mu_);
      if (connected_) unregistered_since_ = said_unregistered_ = absl::Now();
      connected_ = false;
      outbox_.clear();
      auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !writing_; };
      mu_.Await(absl::Condition(&idle));
      stream_.reset();
      context_.reset();
    }
    status = stream->Finish();
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
    }
    if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
        status.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
      LOG(ERROR) << "the coordinator refused " << description_ << ": " << status.error_message()
                 << " (retrying in " << absl::FormatDuration(backoff) << ")";
    } else {
      LOG(WARNING) << description_ << ": control stream ended (" << status.error_message()
                   << "); reconnecting in " << absl::FormatDuration(backoff);
    }
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), backoff)) return;
    }
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

}  // namespace kennel::core
