#include "inference_node/serving_model.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <optional>

#ifdef KENNEL_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/logging.h"
#include "core/ml/aoti_model.h"
#include "core/ml/artifact.h"
#include "core/ml/scripted_model.h"
#include "core/status_macros.h"
#include "core/ml/torch_errors.h"

namespace kennel::inference {
namespace {

// What TorchBatchModel runs, whatever the model's kind.
class Net {
 public:
  virtual ~Net() = default;
  virtual void To(torch::Device device, torch::ScalarType dtype) = 0;
  virtual std::vector<torch::Tensor> Parameters() = 0;
  virtual torch::Tensor Output(const torch::Tensor& x) = 0;  // Logits or probabilities.
  virtual bool outputs_probabilities() const { return false; }
};

class BuiltinNet : public Net {
 public:
  explicit BuiltinNet(std::shared_ptr<core::Classifier> model) : model_(std::move(model)) {}
  void To(torch::Device device, torch::ScalarType dtype) override { model_->to(device, dtype); }
  std::vector<torch::Tensor> Parameters() override { return model_->parameters(); }
  torch::Tensor Output(const torch::Tensor& x) override { return model_->forward(x); }

 private:
  std::shared_ptr<core::Classifier> model_;
};

class ScriptNet : public Net {
 public:
  ScriptNet(std::shared_ptr<torch::jit::Module> module, bool probabilities)
      : module_(std::move(module)), probabilities_(probabilities) {}
  void To(torch::Device device, torch::ScalarType dtype) override { module_->to(device, dtype); }
  std::vector<torch::Tensor> Parameters() override { return core::ScriptParameters(*module_); }
  torch::Tensor Output(const torch::Tensor& x) override { return core::ScriptOutput(*module_, x); }
  bool outputs_probabilities() const override { return probabilities_; }

 private:
  std::shared_ptr<torch::jit::Module> module_;
  const bool probabilities_;
};

// An AOTInductor package runs as compiled: its device and dtype are fixed (CreateBatchModel
// checks them), it has no parameters to lay out, and it takes contiguous inputs.
class AotiNet : public Net {
 public:
  AotiNet(std::shared_ptr<core::AotiModel> model, bool probabilities)
      : model_(std::move(model)), probabilities_(probabilities) {}
  void To(torch::Device, torch::ScalarType) override {}
  std::vector<torch::Tensor> Parameters() override { return {}; }
  torch::Tensor Output(const torch::Tensor& x) override { return model_->Run(x.contiguous()); }
  bool outputs_probabilities() const override { return probabilities_; }

 private:
  std::shared_ptr<core::AotiModel> model_;
  const bool probabilities_;
};

class TorchBatchModel : public BatchModel {
 public:
  TorchBatchModel(std::unique_ptr<Net> model, Placement placement, CudaTuning cuda, int max_batch)
      : model_(std::move(model)), placement_(placement), cuda_(cuda), max_batch_(max_batch) {}

  absl::Status Init() {
    return core::CallTorch("moving the model to its device", [&] {
      model_->To(placement_.device, placement_.dtype);
      if (!placement_.device.is_cuda()) return;
      if (cuda_.channels_last) core::ToChannelsLast(model_->Parameters());
      if (cuda_.cudnn_benchmark) at::globalContext().setBenchmarkCuDNN(true);
#ifdef KENNEL_WITH_CUDA
      if (cuda_.own_stream) {
        stream_.emplace(c10::cuda::getStreamFromPool(
            /*isHighPriority=*/false, placement_.device.has_index() ? placement_.device.index() : c10::cuda::current_device()));
      }
#endif
    });
  }

  // On CUDA with pinned_upload: a page-locked staging buffer of max_batch inputs, made at the
  // first call. Run finishes with a device-to-host copy on this instance's stream, which waits
  // for the upload, so the buffer is free again when the next batch is assembled.
  torch::Tensor NewBatch(int64_t n, c10::IntArrayRef item_shape) override {
    if (!placement_.device.is_cuda() || !cuda_.pinned_upload || n > max_batch_) {
      return BatchModel::NewBatch(n, item_shape);
    }
    if (!staging_.defined() || staging_[0].sizes() != item_shape) {
      std::vector<int64_t> shape = {max_batch_};
      shape.insert(shape.end(), item_shape.begin(), item_shape.end());
      staging_ = torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat).pinned_memory(true));
    }
    return staging_.narrow(0, 0, n);
  }

  absl::StatusOr<torch::Tensor> Run(const torch::Tensor& batch) override {
    return core::CallTorch("inference", [&] {
      c10::InferenceMode guard;
      if (!placement_.device.is_cuda()) {
        torch::Tensor x = batch.to(placement_.device).to(placement_.dtype);
        return Probabilities(model_->Output(x));
      }
#ifdef KENNEL_WITH_CUDA
      std::optional<c10::cuda::CUDAStreamGuard> on_stream;
      if (stream_) on_stream.emplace(*stream_);
#endif
      // Copy float32 to the device first, convert there: cheaper than converting on the host.
      torch::Tensor x = batch.to(placement_.device, torch::kFloat, /*non_blocking=*/batch.is_pinned()).to(placement_.dtype);
      if (cuda_.channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
      return Probabilities(model_->Output(x)).to(torch::kCPU);
    });
  }

 private:
  torch::Tensor Probabilities(const torch::Tensor& out) {
    return model_->outputs_probabilities() ? out.to(torch::kFloat) : torch::softmax(out.to(torch::kFloat), 1);
  }

  std::unique_ptr<Net> model_;
  const Placement placement_;
  const CudaTuning cuda_;
  const int max_batch_;
  torch::Tensor staging_;
#ifdef KENNEL_WITH_CUDA
  std::optional<c10::cuda::CUDAStream> stream_;
#endif
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

absl::StatusOr<std::unique_ptr<BatchModel>> CreateBatchModel(std::shared_ptr<core::Classifier> model,
                                                             const Placement& placement, const CudaTuning& cuda,
                                                             int max_batch) {
  auto out = std::make_unique<TorchBatchModel>(std::make_unique<BuiltinNet>(std::move(model)), placement, cuda,
                                               max_batch);
  RETURN_IF_ERROR(out->Init());
  return out;
}

absl::StatusOr<std::unique_ptr<BatchModel>> CreateBatchModel(const core::LoadedModel& loaded, const Placement& placement,
                                                             const CudaTuning& cuda, int max_batch) {
  const bool probabilities = loaded.manifest.scripted().output() == v1::PROBABILITIES;
  std::unique_ptr<Net> net;
  if (loaded.script) {
    net = std::make_unique<ScriptNet>(loaded.script, probabilities);
  } else if (loaded.aoti) {
    const std::string& compiled_for = loaded.aoti->info().device;
    if (compiled_for != (placement.device.is_cuda() ? "cuda" : "cpu") || placement.dtype != torch::kFloat) {
      return absl::FailedPreconditionError(absl::StrCat(
          "an AOTInductor package runs where and as it was compiled: this one for ", compiled_for,
          " in float32 (serve it with --device ", compiled_for, " --precision fp32, or compile it for ",
          placement.device.str(), ")"));
    }
    net = std::make_unique<AotiNet>(loaded.aoti, probabilities);
  } else {
    return CreateBatchModel(loaded.model, placement, cuda, max_batch);
  }
  auto out = std::make_unique<TorchBatchModel>(std::move(net), placement, cuda, max_batch);
  RETURN_IF_ERROR(out->Init());
  return out;
}

absl::StatusOr<CudaTuning> ParseCudaTuning(absl::string_view text) {
  CudaTuning t;
  if (text == "all") return t;
  t = CudaTuning{false, false, false, false};
  if (text == "none") return t;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    if (part == "channels_last") {
      t.channels_last = true;
    } else if (part == "cudnn_benchmark") {
      t.cudnn_benchmark = true;
    } else if (part == "pinned_upload") {
      t.pinned_upload = true;
    } else if (part == "own_stream") {
      t.own_stream = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown CUDA setting \"", part,
          "\": give all, none, or a comma list of channels_last, cudnn_benchmark, pinned_upload, own_stream"));
    }
  }
  return t;
}

std::string CudaTuningText(const CudaTuning& t) {
  std::vector<std::string> on;
  if (t.channels_last) on.push_back("channels_last");
  if (t.cudnn_benchmark) on.push_back("cudnn_benchmark");
  if (t.pinned_upload) on.push_back("pinned_upload");
  if (t.own_stream) on.push_back("own_stream");
  return on.empty() ? "none" : absl::StrJoin(on, ",");
}

std::optional<std::string> ReducedPrecisionWarning(const std::string& precision, absl::Duration reduced,
                                                   absl::Duration fp32, int batch) {
  if (precision == "fp32" || fp32 <= absl::ZeroDuration()) return std::nullopt;
  const double slowdown = absl::FDivDuration(reduced, fp32);
  if (slowdown <= 1.5) return std::nullopt;
  return absl::StrFormat(
      "%s runs %.1fx slower than fp32 on this CPU (warm-up, batch of %d: %.1f ms against %.1f ms): it has no "
      "native %s kernels (e.g. no AVX512-BF16 or AMX) and emulates them; serve with --precision fp32",
      precision, slowdown, batch, absl::ToDoubleMilliseconds(reduced), absl::ToDoubleMilliseconds(fp32), precision);
}

namespace {

// The time of one Run at batch n (after one untimed run).
absl::StatusOr<absl::Duration> TimeRun(BatchModel& model, int n, const v1::PreprocessSpec& p) {
  const torch::Tensor x = torch::zeros({n, p.channels(), p.height(), p.width()});
  RETURN_IF_ERROR(model.Run(x).status());
  const absl::Time t0 = absl::Now();
  RETURN_IF_ERROR(model.Run(x).status());
  return absl::Now() - t0;
}

}  // namespace

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
  const int max_batch = options.batcher.max_batch_size;
  // Warm-up: the first runs allocate and pick kernels; no request should pay for that. On a
  // CPU the largest batch and one input do it; on CUDA every batch size the batcher can form
  // (cuDNN picks its algorithms per shape, timing them when cudnn_benchmark is on).
  std::vector<int> warm_sizes = {max_batch, 1};
  if (placement.device.is_cuda()) {
    warm_sizes.clear();
    for (int n = max_batch; n >= 1; --n) warm_sizes.push_back(n);
  }
  for (int i = 0; i < options.instances; ++i) {
    ASSIGN_OR_RETURN(core::LoadedModel loaded, core::LoadArtifact(artifact_dir));
    out->manifest_ = loaded.manifest;
    ASSIGN_OR_RETURN(auto model, CreateBatchModel(loaded, placement, options.cuda, max_batch));
    const auto& p = loaded.manifest.preprocess();
    for (int n : warm_sizes) {
      torch::Tensor x = model->NewBatch(n, {p.channels(), p.height(), p.width()});
      x.zero_();
      absl::StatusOr<torch::Tensor> warm = model->Run(x);
      if (!warm.ok()) return WarmUpError(artifact_dir, options, warm.status());
      const torch::Tensor& y = *warm;
      // A diverged model (NaN weights) answers NaN to everything: never switch to it.
      if (!torch::isfinite(y).all().item<bool>()) {
        return absl::FailedPreconditionError(absl::StrCat(
            artifact_dir, ": the model's outputs are not finite (NaN or infinity) on its warm-up input; "
                          "its weights are broken (a diverged training run?), so it is not served"));
      }
    }
    if (i == 0 && placement.device.is_cpu() && options.precision != "fp32") {
      // A reduced precision the CPU only emulates can be 10x slower: measure, and say so.
      const int n = std::min(max_batch, 8);
      ASSIGN_OR_RETURN(const absl::Duration reduced, TimeRun(*model, n, p));
      ASSIGN_OR_RETURN(core::LoadedModel fp32_copy, core::LoadArtifact(artifact_dir));
      ASSIGN_OR_RETURN(auto fp32, CreateBatchModel(fp32_copy, Placement{placement.device, torch::kFloat},
                                                   options.cuda, max_batch));
      ASSIGN_OR_RETURN(const absl::Duration full, TimeRun(*fp32, n, p));
      out->precision_slowdown_ = absl::FDivDuration(reduced, full);
      if (auto warning = ReducedPrecisionWarning(options.precision, reduced, full, n)) {
        LOG(WARNING) << artifact_dir << ": " << *warning;
      } else {
        LOG(INFO) << options.precision << " on this CPU: " << absl::StrFormat("%.2f", out->precision_slowdown_)
                  << "x fp32's time per batch of " << n << " (warm-up)";
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
  // One queue for all instances, as deep as the instances' queues were in all.
  BatcherOptions batcher = options.batcher;
  batcher.max_queue_size = options.batcher.max_queue_size * options.instances;
  std::vector<BatchModel*> instances;
  for (auto& model : out->models_) instances.push_back(model.get());
  out->batcher_ = std::make_unique<DynamicBatcher>(batcher, std::move(instances), clock, observer, post);
  return out;
}

ServingModel::~ServingModel() { batcher_.reset(); }

absl::Status ServingModel::Submit(BatchItem item) { return batcher_->Enqueue(std::move(item)); }

int ServingModel::queue_depth() { return batcher_->queue_depth(); }

}  // namespace kennel::inference
