// One model version ready to serve: its manifest, and one DynamicBatcher per model instance
// (each instance its own copy of the weights, run by its batcher's thread). Requests go to
// the instance with the shortest queue. Shared by reference: a request in flight holds the
// ServingModel it started on, so a deploy can switch versions while the old one drains —
// the last reference runs the destructor, which finishes every queued request and joins.
#ifndef KENNEL_INFERENCE_NODE_SERVING_MODEL_H_
#define KENNEL_INFERENCE_NODE_SERVING_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/ml/models.h"
#include "inference_node/batcher.h"
#include "inference_node/thread_pool.h"
#include "kennel/v1/model.pb.h"

namespace kennel::inference {

struct ServingModelOptions {
  int instances = 1;
  BatcherOptions batcher;
  // Where the instances run, in LibTorch's syntax: "cpu", "cuda" or "cuda:N".
  std::string device = "cpu";
  // "fp32", "bf16", or "fp16" (CUDA only). Requests stay float32 up to the device, where the
  // batch is converted; probabilities come back as float32.
  std::string precision = "fp32";

  bool on_gpu() const { return device.rfind("cuda", 0) == 0; }
};

// The device and dtype that options name, checked: INVALID_ARGUMENT for a malformed device,
// an unknown precision or fp16 on a CPU; FAILED_PRECONDITION for CUDA where this LibTorch has
// none or no GPU is visible.
struct Placement {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat;
};
absl::StatusOr<Placement> ResolvePlacement(const std::string& device, const std::string& precision);

class ServingModel {
 public:
  // Loads the artifact once per instance (verifying it) and warms every instance up with a
  // full batch and a single input before returning.
  static absl::StatusOr<std::shared_ptr<ServingModel>> Load(const std::string& artifact_dir,
                                                            const ServingModelOptions& options,
                                                            Clock* clock, BatchObserver observer);
  ~ServingModel();

  const kennel::v1::ModelManifest& manifest() const { return manifest_; }
  absl::Status Submit(BatchItem item);
  int queue_depth();
  const ServingModelOptions& options() const { return options_; }
  absl::Duration warmup_time() const { return warmup_; }

 private:
  ServingModel() = default;
  kennel::v1::ModelManifest manifest_;
  ServingModelOptions options_;
  std::vector<std::unique_ptr<BatchModel>> models_;
  // Builds and sends responses off the batcher threads; outlives the batchers, which post to it.
  std::unique_ptr<ThreadPool> completions_;
  std::vector<std::unique_ptr<DynamicBatcher>> batchers_;  // Destroyed first (declared last).
  absl::Duration warmup_;
};

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_SERVING_MODEL_H_
