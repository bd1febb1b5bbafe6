// gRPC adapter over Engine, on the callback API: reactions never block. ClassifyStream
// keeps up to max_in_flight requests of a stream in the engine at once (reading pauses at
// the limit: backpressure), writes responses in completion order, and answers a bad request
// with an error response while the stream goes on. Status conversion happens here.
#ifndef KENNEL_INFERENCE_NODE_INFERENCE_SERVICE_H_
#define KENNEL_INFERENCE_NODE_INFERENCE_SERVICE_H_

#include "inference_node/engine.h"
#include "kennel/v1/inference.grpc.pb.h"

namespace kennel::inference {

class InferenceService final : public kennel::v1::Inference::CallbackService {
 public:
  InferenceService(Engine* engine, int max_in_flight_per_stream)
      : engine_(engine), max_in_flight_(max_in_flight_per_stream) {}

  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const kennel::v1::ClassifyRequest* request,
                                     kennel::v1::ClassifyResponse* response) override;
  grpc::ServerBidiReactor<kennel::v1::ClassifyRequest, kennel::v1::ClassifyResponse>* ClassifyStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const kennel::v1::GetModelInfoRequest* request,
                                         kennel::v1::ModelInfo* response) override;

 private:
  Engine* engine_;
  int max_in_flight_;
};

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_INFERENCE_SERVICE_H_
