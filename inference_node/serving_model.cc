#include "inference_node/serving_model.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "core/artifact.h"
#include "core/status_macros.h"
#include "core/torch_errors.h"

namespace kennel::inference {
namespace {

// A Classifier in inference mode returning softmax probabilities.
class TorchBatchModel : public BatchModel {
 public:
  explicit TorchBatchModel(std::shared_ptr<core::Classifier> model) : model_(std::move(model)) {}
  absl::StatusOr<torch::Tensor> Run(const torch::Tensor& batch) override {
    return core::CallTorch("inference", [&] {
      c10::InferenceMode guard;
      return torch::softmax(model_->forward(batch), 1);
    });
  }

 private:
  std::shared_ptr<core::Classifier> model_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<ServingModel>> ServingModel::Load(const std::string& artifact_dir,
                                                                 const ServingModelOptions& options,
                                                                 Clock* clock, BatchObserver observer) {
  if (options.instances < 1 || options.batcher.max_batch_size < 1) {
    return absl::InvalidArgumentError("instances and max batch size must be positive");
  }
  std::shared_ptr<ServingModel> out(new ServingModel());
  out->options_ = options;
  const absl::Time start = absl::Now();
  for (int i = 0; i < options.instances; ++i) {
    ASSIGN_OR_RETURN(core::LoadedModel loaded, core::LoadArtifact(artifact_dir));
    out->manifest_ = loaded.manifest;
    auto model = std::make_unique<TorchBatchModel>(loaded.model);
    // Warm-up: the first runs allocate and pick kernels; no request should pay for that.
    const auto& p = loaded.manifest.preprocess();
    for (int n : {options.batcher.max_batch_size, 1}) {
      RETURN_IF_ERROR(model->Run(torch::zeros({n, p.channels(), p.height(), p.width()})).status());
    }
    out->models_.push_back(std::move(model));
  }
  out->warmup_ = absl::Now() - start;
  out->completions_ = std::make_unique<ThreadPool>(options.instances, 1 << 20);
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
