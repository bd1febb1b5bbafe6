// The inference node's logic, free of gRPC: validates a request, preprocesses it on the
// preprocessing pool (decode with limits, resize, normalise per the model's own spec),
// hands it to the current model version's batchers, and builds the response (top-k labels,
// version, time by stage). Deploy() loads a new version beside the serving one, warms it and
// switches atomically; requests already admitted finish on the version they started on.
//
// Classify never blocks; its callback runs on a pool or batcher thread. Thread-safe.
#ifndef KENNEL_INFERENCE_NODE_ENGINE_H_
#define KENNEL_INFERENCE_NODE_ENGINE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/ml/image.h"
#include "inference_node/metrics.h"
#include "inference_node/serving_model.h"
#include "inference_node/thread_pool.h"
#include "kennel/v1/inference.pb.h"

namespace kennel::inference {

struct EngineOptions {
  ServingModelOptions model;
  int preprocess_threads = 1;
  int preprocess_queue = 1024;
  core::DecodeLimits limits;
};

class Engine {
 public:
  using Done = std::function<void(const absl::Status&, kennel::v1::ClassifyResponse)>;

  static absl::StatusOr<std::unique_ptr<Engine>> Create(EngineOptions options, Metrics* metrics,
                                                        Clock* clock = nullptr);
  ~Engine();

  // Blocks while loading and warming up. On error the serving version is unchanged.
  absl::Status Deploy(const std::string& artifact_dir);
  // True once a warmed model serves.
  bool ready();
  std::shared_ptr<ServingModel> current();

  // Takes the request by value: callers move it in, and its image bytes are never copied.
  void Classify(kennel::v1::ClassifyRequest request, absl::Time deadline, Done done);
  absl::StatusOr<kennel::v1::ModelInfo> Info();
  int queue_depth();
  Metrics* metrics() const { return metrics_; }

 private:
  Engine(EngineOptions options, Metrics* metrics, Clock* clock);
  void Finish(const std::shared_ptr<ServingModel>& model, const kennel::v1::ClassifyRequest& request,
              absl::Time start, absl::Duration preprocess, absl::StatusOr<BatchResult> result, const Done& done);
  void Fail(const kennel::v1::ClassifyRequest& request, const absl::Status& status, const Done& done);

  const EngineOptions options_;
  Metrics* const metrics_;
  RealClock real_clock_;
  Clock* const clock_;
  absl::Mutex deploy_mu_;  // One deploy at a time.
  absl::Mutex mu_;
  std::shared_ptr<ServingModel> current_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ThreadPool> pool_;  // Destroyed first: its tasks use the members above.
};

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_ENGINE_H_
