#include "inference_node/inference_service.h"

#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/auth.h"
#include "core/grpc_status.h"

namespace kennel::inference {
namespace {

absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  const auto d = context->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

}  // namespace

// One ClassifyStream. Two limits keep it from hurting anyone:
//  - per stream, at most max_in_flight requests between being read and their response being
//    written: a client that stops reading stops being read (its memory here is bounded);
//  - node-wide, a slot of the AdmissionGate for every request inside the engine: when the
//    engine's queues are full, streams wait for a slot before reading on.
// Reactions never block: waiting is a callback from the gate.
class StreamReactor : public grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse> {
 public:
  StreamReactor(grpc::CallbackServerContext* context, Engine* engine, AdmissionGate* gate, int max_in_flight,
                InferenceService* service)
      : context_(context), engine_(engine), gate_(gate), max_in_flight_(max_in_flight), service_(service),
        waiter_(std::make_shared<AdmissionGate::Waiter>()) {
    waiter_->on_slot = [this] { OnSlot(); };
    absl::MutexLock lock(&mu_);
    MaybeRead();
  }

  // The node is shutting down: read nothing more, answer what was read, then end the stream
  // with UNAVAILABLE so the client goes to another node.
  void Drain() {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    MaybeFinish();
  }

  void OnReadDone(bool ok) override {
    v1::ClassifyRequest request;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok) {
        reads_done_ = true;
        const bool give_back = slot_held_;
        slot_held_ = false;
        MaybeFinish();
        if (!give_back) return;
      } else {
        if (finished_) return;  // Drained meanwhile: its slot went back at Finish.
        slot_held_ = false;  // This request has it now.
        ++in_flight_;
        ++refs_;
        request = std::move(request_);
      }
    }
    if (!ok) {
      gate_->Release();
      return;
    }
    // Outside the lock: the callback may run right here (a bad request fails at once).
    engine_->Classify(std::move(request), DeadlineOf(context_), [this](const absl::Status& status, v1::ClassifyResponse response) {
      if (!status.ok()) {
        response.set_error_code(static_cast<int>(status.code()));
        response.set_error_message(std::string(status.message()));
      }
      gate_->Release();  // Its answer is ready: the engine no longer holds it.
      bool last_reference = false;
      {
        absl::MutexLock lock(&mu_);
        --refs_;
        if (!broken_ && !finished_) {
          queue_.push_back(std::move(response));
          if (!writing_) WriteFront();
        } else {
          --in_flight_;  // Never to be written.
        }
        MaybeRead();
        MaybeFinish();
        last_reference = done_ && refs_ == 0;
      }
      if (last_reference) delete this;  // The stream ended while this request was inside.
    });
    absl::MutexLock lock(&mu_);
    MaybeRead();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    queue_.pop_front();
    --in_flight_;  // Written: its slot in this stream is free.
    if (!ok) {  // Client gone: drop the rest; engine callbacks still arrive and are counted.
      broken_ = true;
      in_flight_ -= static_cast<int>(queue_.size());
      queue_.clear();
    } else if (!queue_.empty()) {
      WriteFront();
    }
    MaybeRead();
    MaybeFinish();
  }

  // Never blocks: engine and gate callbacks that still reference this reactor delete it when
  // the last of them is done.
  void OnDone() override {
    service_->Forget(this);
    bool unreferenced = false;
    {
      absl::MutexLock lock(&mu_);
      if (waiting_ && gate_->Cancel(waiter_)) {
        waiting_ = false;
        --refs_;
      }
      done_ = true;
      unreferenced = refs_ == 0;
    }
    if (unreferenced) delete this;
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    broken_ = true;
    reads_done_ = true;
    MaybeFinish();
  }

 private:
  // A slot from the gate, then the next read: only while this stream has room.
  void MaybeRead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (reading_ || waiting_ || reads_done_ || finished_ || broken_ || draining_) return;
    if (in_flight_ >= max_in_flight_) return;  // Resumes when a response is written.
    if (!slot_held_) {
      if (!gate_->Acquire(waiter_)) {
        waiting_ = true;  // OnSlot follows.
        ++refs_;
        return;
      }
      slot_held_ = true;
    }
    reading_ = true;
    StartRead(&request_);
  }

  // The gate handed this stream a slot.
  void OnSlot() {
    bool give_back = false, last_reference = false;
    AdmissionGate* gate = gate_;
    {
      absl::MutexLock lock(&mu_);
      --refs_;
      waiting_ = false;
      if (reads_done_ || finished_ || broken_ || draining_) {
        give_back = true;
      } else {
        slot_held_ = true;
        MaybeRead();
      }
      last_reference = done_ && refs_ == 0;
    }
    if (last_reference) delete this;
    if (give_back) gate->Release();
  }

  // Writes the oldest queued response. When more are queued behind it, gRPC may hold it and
  // send it with the next one (fewer frames and syscalls when a batch completes at once);
  // the last of the queue is written without the hint, which flushes them all.
  void WriteFront() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    grpc::WriteOptions options;
    if (queue_.size() > 1) options.set_buffer_hint();
    writing_ = true;
    StartWrite(&queue_.front(), options);
  }

  void MaybeFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || (!reads_done_ && !draining_)) return;
    const int engine_pending = refs_ - (waiting_ ? 1 : 0);
    if (!broken_ && (engine_pending > 0 || !queue_.empty())) return;
    if (writing_) return;  // Finish after the write in flight.
    if (draining_ && !reads_done_ && slot_held_) {
      slot_held_ = false;  // The read outstanding will not be used.
      gate_release_on_finish_ = true;
    }
    finished_ = true;
    if (draining_ && !reads_done_ && !broken_) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the inference node is shutting down; reconnect"));
    } else {
      Finish(broken_ && context_->IsCancelled() ? grpc::Status::CANCELLED : grpc::Status::OK);
    }
    if (gate_release_on_finish_) gate_->Release();
  }

  grpc::CallbackServerContext* context_;
  Engine* engine_;
  AdmissionGate* gate_;
  const int max_in_flight_;
  InferenceService* const service_;
  std::shared_ptr<AdmissionGate::Waiter> waiter_;
  v1::ClassifyRequest request_;  // Only the reactor's single outstanding read writes it.
  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // Read, response not yet written.
  int refs_ ABSL_GUARDED_BY(mu_) = 0;       // Engine callbacks and a gate wait outstanding.
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool waiting_ ABSL_GUARDED_BY(mu_) = false;    // For a gate slot.
  bool slot_held_ ABSL_GUARDED_BY(mu_) = false;  // A slot for the next read.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool gate_release_on_finish_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // OnDone ran: the last reference deletes.
  std::deque<v1::ClassifyResponse> queue_ ABSL_GUARDED_BY(mu_);  // Front is being written.
};


// A stream the caller may not open: ended at once with why.
class RefusedStream : public grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse> {
 public:
  explicit RefusedStream(const grpc::Status& why) { Finish(why); }
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* InferenceService::Classify(grpc::CallbackServerContext* context,
                                                     const v1::ClassifyRequest* request,
                                                     v1::ClassifyResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (auto denied = core::Authorize(*context, enforce_, "Classify"); !denied.ok()) {
    reactor->Finish(denied);
    return reactor;
  }
  if (refuse_unary_.load(std::memory_order_relaxed)) {
    // Idempotent: a client's retry policy (UNAVAILABLE) sends it to another node.
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the inference node is shutting down; retry on another"));
    return reactor;
  }
  if (!gate_->Acquire()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 absl::StrCat("the node is at its limit of ", gate_->capacity(),
                                              " requests in progress; retry later (streams wait instead)")));
    return reactor;
  }
  AdmissionGate* gate = gate_;
  engine_->Classify(*request, DeadlineOf(context),
                    [reactor, response, gate](const absl::Status& status, v1::ClassifyResponse r) {
                      gate->Release();
                      *response = std::move(r);
                      reactor->Finish(core::ToGrpcStatus(status));
                    });
  return reactor;
}

grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse>* InferenceService::ClassifyStream(
    grpc::CallbackServerContext* context) {
  if (auto denied = core::Authorize(*context, enforce_, "ClassifyStream"); !denied.ok()) {
    return new RefusedStream(denied);
  }
  auto* reactor = new StreamReactor(context, engine_, gate_, max_in_flight_, this);
  absl::MutexLock lock(&mu_);
  streams_.insert(reactor);
  if (draining_) reactor->Drain();
  return reactor;
}

void InferenceService::Forget(StreamReactor* reactor) {
  absl::MutexLock lock(&mu_);
  streams_.erase(reactor);
}

int InferenceService::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  refuse_unary_ = true;
  for (StreamReactor* r : streams_) r->Drain();
  return static_cast<int>(streams_.size());
}

bool InferenceService::WaitForStreamsDone(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_.empty(); };
  return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest*,
                                                         v1::ModelInfo* response) {
  auto* reactor = context->DefaultReactor();
  if (auto denied = core::Authorize(*context, enforce_, "GetModelInfo"); !denied.ok()) {
    reactor->Finish(denied);
    return reactor;
  }
  auto info = engine_->Info();
  if (info.ok()) *response = *std::move(info);
  reactor->Finish(core::ToGrpcStatus(info.status()));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetServingStats(grpc::CallbackServerContext* context,
                                                            const v1::GetServingStatsRequest*,
                                                            v1::ServingStats* response) {
  auto* reactor = context->DefaultReactor();
  if (auto denied = core::Authorize(*context, enforce_, "GetServingStats"); !denied.ok()) {
    reactor->Finish(denied);
    return reactor;
  }
  *response = engine_->metrics()->Stats();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace kennel::inference
