// gRPC adapter over Engine, on the callback API: reactions never block. ClassifyStream
// keeps up to max_in_flight requests of a stream between read and written response, and takes
// a node-wide AdmissionGate slot for each request inside the engine: reading pauses at either
// limit (backpressure), so a slow reader bounds its own memory and a full engine makes streams
// wait instead of refusing them. Responses go out in completion order; a bad request gets an
// error response while the stream goes on. Status conversion happens here.
#ifndef KENNEL_INFERENCE_NODE_INFERENCE_SERVICE_H_
#define KENNEL_INFERENCE_NODE_INFERENCE_SERVICE_H_

#include <atomic>
#include <set>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "inference_node/admission.h"
#include "inference_node/engine.h"
#include "kennel/v1/inference.grpc.pb.h"

namespace kennel::inference {

class StreamReactor;

class InferenceService final : public kennel::v1::Inference::CallbackService {
 public:
  // `gate` (not owned) outlives the service.
  // enforce: every call is checked against its roles (core/auth.h); on with TLS.
  InferenceService(Engine* engine, AdmissionGate* gate, int max_in_flight_per_stream, bool enforce = false)
      : engine_(engine), gate_(gate), max_in_flight_(max_in_flight_per_stream), enforce_(enforce) {}

  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const kennel::v1::ClassifyRequest* request,
                                     kennel::v1::ClassifyResponse* response) override;
  grpc::ServerBidiReactor<kennel::v1::ClassifyRequest, kennel::v1::ClassifyResponse>* ClassifyStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const kennel::v1::GetModelInfoRequest* request,
                                         kennel::v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetServingStats(grpc::CallbackServerContext* context,
                                            const kennel::v1::GetServingStatsRequest* request,
                                            kennel::v1::ServingStats* response) override;

  // Shutdown, step 1: every stream (open and new) reads nothing more, answers what it read and
  // ends with UNAVAILABLE; new unary calls are refused with UNAVAILABLE (clients retry them on
  // another node). Returns the streams open now.
  int Drain();
  // Step 2: true once every stream has ended, false at the timeout.
  bool WaitForStreamsDone(absl::Duration timeout);

 private:
  friend class StreamReactor;
  void Forget(StreamReactor* reactor);  // From a reactor's OnDone.

  Engine* engine_;
  AdmissionGate* gate_;
  int max_in_flight_;
  bool enforce_;
  absl::Mutex mu_;
  std::set<StreamReactor*> streams_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> refuse_unary_{false};  // draining_, read without the lock per call.
};

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_INFERENCE_SERVICE_H_
