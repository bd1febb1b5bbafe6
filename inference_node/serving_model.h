// One model version ready to serve: its manifest, its model instances (each its own copy of
// the weights) and the DynamicBatcher whose one queue they all take batches from, so a request
// goes to a free instance when there is one. Shared by reference: a request in flight holds the
// ServingModel it started on, so a deploy can switch versions while the old one drains —
// the last reference runs the destructor, which finishes every queued request and joins.
#ifndef KENNEL_INFERENCE_NODE_SERVING_MODEL_H_
#define KENNEL_INFERENCE_NODE_SERVING_MODEL_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/ml/artifact.h"
#include "core/ml/models.h"
#include "inference_node/batcher.h"
#include "inference_node/thread_pool.h"
#include "kennel/v1/model.pb.h"

namespace kennel::inference {

// How a model runs on a CUDA device. Each switch is independent (bench/g1_gpu.sh measures each);
// none applies on a CPU, whose path is the same, bit for bit, whatever is set here.
struct CudaTuning {
  bool channels_last = true;    // NHWC weights and inputs: what cuDNN's tensor-core kernels use.
  bool cudnn_benchmark = true;  // cuDNN times its algorithms for each shape at warm-up, keeps the fastest.
  bool pinned_upload = true;    // Batches are assembled in page-locked memory, uploaded without blocking.
  bool own_stream = true;       // Each instance uploads and computes on its own stream, so one
                                // instance's upload overlaps another's forward.
};
// "all", "none", or a comma list of channels_last, cudnn_benchmark, pinned_upload, own_stream.
absl::StatusOr<CudaTuning> ParseCudaTuning(absl::string_view text);
std::string CudaTuningText(const CudaTuning& tuning);

struct ServingModelOptions {
  int instances = 1;
  BatcherOptions batcher;
  // Where the instances run, in LibTorch's syntax: "cpu", "cuda" or "cuda:N".
  std::string device = "cpu";
  // "fp32", "bf16", or "fp16" (CUDA only). Requests stay float32 up to the device, where the
  // batch is converted; probabilities come back as float32.
  std::string precision = "fp32";
  CudaTuning cuda;

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

// The model as the batcher runs it: inference mode on its device and dtype (the float32 batch
// copied to the device, converted there), float32 softmax probabilities back on the CPU.
// `max_batch` sizes a CUDA model's pinned staging buffer.
absl::StatusOr<std::unique_ptr<BatchModel>> CreateBatchModel(std::shared_ptr<core::Classifier> model,
                                                             const Placement& placement, const CudaTuning& cuda,
                                                             int max_batch);
// The same for a loaded artifact of either kind (a TorchScript module's output taken as it
// declares: logits go through softmax, probabilities do not).
absl::StatusOr<std::unique_ptr<BatchModel>> CreateBatchModel(const core::LoadedModel& loaded,
                                                             const Placement& placement, const CudaTuning& cuda,
                                                             int max_batch);

// What to say about a reduced precision on a CPU, from the warm-up's timings of one batch in
// it and in fp32: a warning naming the slowdown when it is over 1.5x (a CPU without native
// bf16, e.g. no AVX512-BF16 or AMX, emulates it), nothing otherwise.
std::optional<std::string> ReducedPrecisionWarning(const std::string& precision, absl::Duration reduced,
                                                   absl::Duration fp32, int batch);

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
  // On a CPU in bf16: how many times slower than fp32 the warm-up batch ran (0: not measured).
  double precision_slowdown() const { return precision_slowdown_; }

 private:
  ServingModel() = default;
  kennel::v1::ModelManifest manifest_;
  ServingModelOptions options_;
  std::vector<std::unique_ptr<BatchModel>> models_;
  // Builds and sends responses off the batcher threads; outlives the batcher, which posts to it.
  std::unique_ptr<ThreadPool> completions_;
  std::unique_ptr<DynamicBatcher> batcher_;  // Destroyed first (declared last).
  absl::Duration warmup_;
  double precision_slowdown_ = 0;
};

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_SERVING_MODEL_H_
