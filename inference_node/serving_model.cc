#include "inference_node/serving_model.h"

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/ml/artifact.h"
#include "core/status_macros.h"
#include "core/ml/torch_errors.h"

namespace kennel::inference {
namespace {

// A Classifier in inference mode on its device and dtype, returning float32 softmax
// probabilities on the CPU.
class TorchBatchModel : public BatchModel {
 public:
  TorchBatchModel(std::shared_ptr<core::Classifier> model, Placement placement)
      : model_(std::move(model)), placement_(placement) {}

  static absl::StatusOr<std::unique_ptr<TorchBatchModel>> Create(std::shared_ptr<core::Classifier> model,
                                                                 Placement placement) {
    RETURN_IF_ERROR(core::CallTorch("moving the model to its device", [&] {
      model->to(placement.device, placement.dtype);
    }));
    return std::make_unique<TorchBatchModel>(std::move(model), placement);
  }

  absl::StatusOr<torch::Tensor> Run(const torch::Tensor& batch) override {
    return core::CallTorch("inference", [&] {
      c10::InferenceMode guard;
      // Copy float32 to the device first, convert there: cheaper than converting on the host.
      torch::Tensor x = batch.to(placement_.device).to(placement_.dtype);
      torch::Tensor p = torch::softmax(model_->forward(x).to(torch::kFloat), 1);
      return p.device().is_cpu() ? p : p.to(torch::kCPU);
    });
  }

 private:
  std::shared_ptr<core::Classifier> model_;
  Placement placement_;
};

// A model that cannot run where it was placed is the node's configuration, not a passing
// fault: FAILED_PRECONDITION (where LibTorch said only "internal"), saying what to change.
// (Seen: Debian's LibTorch 1.13 with oneDNN held below AVX-512 by ONEDNN_MAX_CPU_ISA has no
// bfloat16 convolution: "could not create a primitive descriptor iterator".)
absl::Status WarmUpError(const std::string& artifact_dir, const ServingModelOptions& options,
                         const absl::Status& error) {
  const bool cpu_reduced = options.precision != "fp32" && absl::StartsWith(options.device, "cpu");
  const absl::StatusCode code =
      error.code() == absl::StatusCode::kInternal ? absl::StatusCode::kFailedPrecondition : error.code();
  return absl::Status(code, absl::StrCat(
      artifact_dir, ": the model does not run in ", options.precision, " on ", options.device,
      " with this LibTorch: ", error.message(),
      cpu_reduced ? "; this CPU or LibTorch has no kernels for that precision: serve with --precision fp32" : ""));
}

}  // namespace

absl::StatusOr<Placement> ResolvePlacement(const std::string& device, const std::string& precision) {
  Placement p;
  ASSIGN_OR_RETURN(p.device, core::CallTorch(
                                 "device", [&] { return torch::Device(device); }, absl::StatusCode::kInvalidArgument));
  if (!p.device.is_cpu() && !p.device.is_cuda()) {
    return absl::InvalidArgumentError(absl::StrCat("device must be cpu, cuda or cuda:N, got \"", device, "\""));
  }
  if (p.device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", device, ": this LibTorch has no CUDA support or no GPU is visible"));
    }
    const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
    if (p.device.has_index() && p.device.index() >= count) {
      return absl::InvalidArgumentError(absl::StrCat("device ", device, ": only ", count, " GPU(s) visible"));
    }
  }
  if (precision == "fp32") {
    p.dtype = torch::kFloat;
  } else if (precision == "bf16") {
    p.dtype = torch::kBFloat16;
  } else if (precision == "fp16") {
    if (!p.device.is_cuda()) {
      return absl::InvalidArgumentError("precision fp16 runs on CUDA only; use bf16 or fp32 on a CPU");
    }
    p.dtype = torch::kHalf;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("precision must be fp32, bf16 or fp16, got \"", precision, "\""));
  }
  return p;
}

absl::StatusOr<std::shared_ptr<ServingModel>> ServingModel::Load(const std::string& artifact_dir,
                                                                 const ServingModelOptions& options,
                                                                 Clock* clock, BatchObserver observer) {
  if (options.instances < 1 || options.batcher.max_batch_size < 1) {
    return absl::InvalidArgumentError("instances and max batch size must be positive");
  }
  ASSIGN_OR_RETURN(const Placement placement, ResolvePlacement(options.device, options.precision));
  std::shared_ptr<ServingModel> out(new ServingModel());
  out->options_ = options;
  const absl::Time start = absl::Now();
  for (int i = 0; i < options.instances; ++i) {
    ASSIGN_OR_RETURN(core::LoadedModel loaded, core::LoadArtifact(artifact_dir));
    out->manifest_ = loaded.manifest;
    ASSIGN_OR_RETURN(auto model, TorchBatchModel::Create(loaded.model, placement));
    // Warm-up: the first runs allocate and pick kernels; no request should pay for that.
    const auto& p = loaded.manifest.preprocess();
    for (int n : {options.batcher.max_batch_size, 1}) {
      absl::StatusOr<torch::Tensor> warm = model->Run(torch::zeros({n, p.channels(), p.height(), p.width()}));
      if (!warm.ok()) return WarmUpError(artifact_dir, options, warm.status());
      const torch::Tensor& out = *warm;
      // A diverged model (NaN weights) answers NaN to everything: never switch to it.
      if (!torch::isfinite(out).all().item<bool>()) {
        return absl::FailedPreconditionError(absl::StrCat(
            artifact_dir, ": the model's outputs are not finite (NaN or infinity) on its warm-up input; "
                          "its weights are broken (a diverged training run?), so it is not served"));
      }
    }
    out->models_.push_back(std::move(model));
  }
  out->warmup_ = absl::Now() - start;
  out->completions_ = std::make_unique<ThreadPool>(options.instances, 1 << 20, "kennel-respond");
  ThreadPool* pool = out->completions_.get();
  auto post = [pool](std::function<void()> task) {
    if (!pool->TrySubmit(task)) task();  // Never drop a completion.
  };
  for (auto& model : out->models_) {
    out->batchers_.push_back(std::make_unique<DynamicBatcher>(options.batcher, model.get(), clock, observer, post));
  }
  return out;
}

ServingModel::~ServingModel() { batchers_.clear(); }

absl::Status ServingModel::Submit(BatchItem item) {
  DynamicBatcher* best = batchers_.front().get();
  int best_depth = best->queue_depth();
  for (size_t i = 1; i < batchers_.size() && best_depth > 0; ++i) {
    const int d = batchers_[i]->queue_depth();
    if (d < best_depth) {
      best = batchers_[i].get();
      best_depth = d;
    }
  }
  return best->Enqueue(std::move(item));
}

int ServingModel::queue_depth() {
  int n = 0;
  for (auto& b : batchers_) n += b->queue_depth();
  return n;
}

}  // namespace kennel::inference
