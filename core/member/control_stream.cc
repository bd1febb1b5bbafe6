#include "core/member/control_stream.h"

#include "core/logging.h"

#include "absl/time/clock.h"

namespace kennel::core {

ControlStream::ControlStream(v1::Coordinator::Stub* stub, std::string description,
                             ControlStreamCallbacks callbacks)
    : stub_(stub), description_(std::move(description)), callbacks_(std::move(callbacks)) {
  reader_ = std::thread([this] { ReadLoop(); });
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
}

ControlStream::~ControlStream() {
  Stop();
  reader_.join();
  heartbeat_.join();
}

void ControlStream::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  absl::MutexLock lock(&stream_mu_);
  if (context_) context_->TryCancel();  // Unblocks the reader's Read.
}

void ControlStream::Send(const v1::TrainerMessage& message) {
  absl::MutexLock lock(&stream_mu_);
  if (stream_) stream_->Write(message);
}

void ControlStream::HeartbeatLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), heartbeat_interval_)) return;
    }
    v1::TrainerMessage message;
    *message.mutable_heartbeat() = callbacks_.make_heartbeat();
    Send(message);
  }
}

void ControlStream::ReadLoop() {
  absl::Duration backoff = absl::Milliseconds(200);
  while (true) {
    v1::TrainerMessage hello;
    *hello.mutable_register_() = callbacks_.make_register();
    grpc::ClientReaderWriter<v1::TrainerMessage, v1::CoordinatorMessage>* stream;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      absl::MutexLock stream_lock(&stream_mu_);
      context_ = std::make_unique<grpc::ClientContext>();
      context_->set_wait_for_ready(true);
      stream_ = stub_->TrainerControl(context_.get());
      stream_->Write(hello);
      stream = stream_.get();
    }
    v1::CoordinatorMessage message;
    bool connected = false;
    while (stream->Read(&message)) {  // Only this thread reads.
      if (!connected) {
        LOG(INFO) << description_ << " connected to the coordinator";
        connected = true;
        backoff = absl::Milliseconds(200);
      }
      if (message.has_ack()) {
        absl::MutexLock lock(&mu_);
        heartbeat_interval_ = absl::Milliseconds(std::max(100, message.ack().heartbeat_interval_ms()));
        continue;
      }
      callbacks_.on_message(message);
    }
    grpc::Status status;
    {
      absl::MutexLock lock(&stream_mu_);
      status = stream_->Finish();
      stream_.reset();
      context_.reset();
    }
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
    }
    if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      LOG(ERROR) << "the coordinator refused " << description_ << ": " << status.error_message();
    } else {
      LOG(WARNING) << description_ << ": control stream ended (" << status.error_message()
                   << "); reconnecting in " << absl::FormatDuration(backoff);
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

}  // namespace kennel::core
