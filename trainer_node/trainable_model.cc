#include "trainer_node/trainable_model.h"

#include <torch/torch.h>

#include "core/logging.h"
#include "core/status_macros.h"

namespace kennel::trainer {

std::vector<torch::Tensor> BuiltinModel::FloatBuffers() const {
  std::vector<torch::Tensor> out;
  for (const auto& b : model_->buffers()) {
    if (b.is_floating_point()) out.push_back(b);
  }
  return out;
}

void BuiltinModel::To(torch::Device device, bool channels_last) {
  model_->to(device);
  if (!channels_last) return;
  torch::NoGradGuard no_grad;
  for (auto& p : model_->parameters()) {
    if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  }
}

absl::StatusOr<std::unique_ptr<BuiltinModel>> CreateBuiltinModel(const kennel::v1::JobSpec& spec) {
  const kennel::v1::TrainingSpec& t = spec.training();
  ASSIGN_OR_RETURN(std::shared_ptr<core::Classifier> model, core::CreateModel(spec.model()));
  if (!t.init_weights().empty()) {
    ASSIGN_OR_RETURN(core::StateDict weights, core::ReadWeightsFile(t.init_weights()));
    RETURN_IF_ERROR(core::LoadStateDict(*model, weights, {.strict = false}));
    LOG(INFO) << "initial weights from " << t.init_weights();
  }
  if (t.freeze_backbone()) model->FreezeBackbone();
  return std::make_unique<BuiltinModel>(std::move(model));
}

}  // namespace kennel::trainer
