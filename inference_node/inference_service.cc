#include "inference_node/inference_service.h"

#include <deque>

#include "absl/time/clock.h"
#include "core/grpc_status.h"

namespace kennel::inference {
namespace {

absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  const auto d = context->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

class StreamReactor : public grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse> {
 public:
  StreamReactor(grpc::CallbackServerContext* context, Engine* engine, int max_in_flight)
      : context_(context), engine_(engine), max_in_flight_(max_in_flight) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    v1::ClassifyRequest request;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        reads_done_ = true;
        MaybeFinish();
        return;
      }
      ++in_flight_;
      ++refs_;
      request = std::move(request_);
      if (in_flight_ < max_in_flight_) {
        StartRead(&request_);
      } else {
        reading_paused_ = true;  // Backpressure: resume when a response completes.
      }
    }
    // Outside the lock: the callback may run right here (a bad request fails at once).
    engine_->Classify(request, DeadlineOf(context_), [this](const absl::Status& status, v1::ClassifyResponse response) {
      if (!status.ok()) {
        response.set_error_code(static_cast<int>(status.code()));
        response.set_error_message(std::string(status.message()));
      }
      absl::MutexLock lock(&mu_);
      --in_flight_;
      --refs_;
      if (!broken_ && !finished_) {
        queue_.push_back(std::move(response));
        if (queue_.size() == 1) WriteFront();
      }
      if (reading_paused_ && in_flight_ < max_in_flight_ && !finished_ && !reads_done_) {
        reading_paused_ = false;
        StartRead(&request_);
      }
      MaybeFinish();
    });
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    queue_.pop_front();
    if (!ok) {  // Client gone: drop the rest; Classify callbacks still arrive and are counted.
      broken_ = true;
      queue_.clear();
    }
    if (!queue_.empty() && !broken_) WriteFront();
    MaybeFinish();
  }

  void OnDone() override {
    // Completion callbacks may still reference this reactor: wait for them.
    {
      absl::MutexLock lock(&mu_);
      auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return refs_ == 0; };
      mu_.Await(absl::Condition(&idle));
    }
    delete this;
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    broken_ = true;
    reads_done_ = true;
    MaybeFinish();
  }

 private:
  // Writes the oldest queued response. When more are queued behind it, gRPC may hold it and
  // send it with the next one (fewer frames and syscalls when a batch completes at once);
  // the last of the queue is written without the hint, which flushes them all.
  void WriteFront() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    grpc::WriteOptions options;
    if (queue_.size() > 1) options.set_buffer_hint();
    StartWrite(&queue_.front(), options);
  }

  void MaybeFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !reads_done_) return;
    if (!broken_ && (in_flight_ > 0 || !queue_.empty())) return;
    if (broken_ && !queue_.empty()) return;  // A write is still outstanding.
    finished_ = true;
    Finish(broken_ && context_->IsCancelled() ? grpc::Status::CANCELLED : grpc::Status::OK);
  }

  grpc::CallbackServerContext* context_;
  Engine* engine_;
  const int max_in_flight_;
  v1::ClassifyRequest request_;  // Only the reactor's single outstanding read writes it.
  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int refs_ ABSL_GUARDED_BY(mu_) = 0;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<v1::ClassifyResponse> queue_ ABSL_GUARDED_BY(mu_);  // Front is being written.
};

}  // namespace

grpc::ServerUnaryReactor* InferenceService::Classify(grpc::CallbackServerContext* context,
                                                     const v1::ClassifyRequest* request,
                                                     v1::ClassifyResponse* response) {
  auto* reactor = context->DefaultReactor();
  engine_->Classify(*request, DeadlineOf(context),
                    [reactor, response](const absl::Status& status, v1::ClassifyResponse r) {
                      *response = std::move(r);
                      reactor->Finish(core::ToGrpcStatus(status));
                    });
  return reactor;
}

grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse>* InferenceService::ClassifyStream(
    grpc::CallbackServerContext* context) {
  return new StreamReactor(context, engine_, max_in_flight_);
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest*,
                                                         v1::ModelInfo* response) {
  auto* reactor = context->DefaultReactor();
  auto info = engine_->Info();
  if (info.ok()) *response = *std::move(info);
  reactor->Finish(core::ToGrpcStatus(info.status()));
  return reactor;
}

}  // namespace kennel::inference
