#include "trainer_node/trainable_model.h"

#include <torch/script.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/files.h"
#include "core/ml/artifact.h"
#include "core/ml/scripted_model.h"

#include "core/logging.h"
#include "core/ml/weights.h"
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
  if (channels_last) core::ToChannelsLast(model_->parameters());
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

absl::Status BuiltinModel::WriteArtifact(const std::string& dir, kennel::v1::ModelManifest manifest) {
  model_->eval();
  return core::WriteArtifact(dir, std::move(manifest), *model_);
}

torch::Tensor ScriptedModel::Forward(const torch::Tensor& images) {
  return core::ScriptOutput(*module_, images);  // As served: the same operators.
}

std::vector<torch::Tensor> ScriptedModel::Parameters() const { return core::ScriptParameters(*module_); }

std::vector<torch::Tensor> ScriptedModel::FloatBuffers() const {
  std::vector<torch::Tensor> out;
  for (const auto& b : module_->buffers()) {
    if (b.is_floating_point()) out.push_back(b);
  }
  return out;
}

void ScriptedModel::SetTraining(bool on) {
  module_->train(on);
  if (!on || trainable_child_.empty()) return;
  // A frozen backbone stays frozen: its batch norms keep their statistics.
  for (auto child : module_->named_children()) {
    if (child.name != trainable_child_) child.value.eval();
  }
}

void ScriptedModel::To(torch::Device device, bool channels_last) {
  module_->to(device);
  if (channels_last) core::ToChannelsLast(Parameters());
}

core::StateDict ScriptedModel::State() const {
  core::StateDict out;
  for (const auto& p : module_->named_parameters()) out[p.name] = p.value;
  for (const auto& b : module_->named_buffers()) out[b.name] = b.value;
  return out;
}

absl::Status ScriptedModel::LoadState(const core::StateDict& state) {
  const core::StateDict mine = State();
  std::vector<std::string> problems;
  for (const auto& [name, t] : mine) {
    auto it = state.find(name);
    if (it == state.end()) {
      problems.push_back(absl::StrCat("missing ", name));
    } else if (it->second.sizes() != t.sizes()) {
      problems.push_back(absl::StrCat(name, " has shape ", c10::str(it->second.sizes()), ", the model ",
                                      c10::str(t.sizes())));
    }
  }
  for (const auto& [name, t] : state) {
    if (mine.count(name) == 0) problems.push_back(absl::StrCat("unexpected ", name));
  }
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : mine) {
    torch::Tensor target = t;
    target.copy_(state.at(name).to(t.device(), t.scalar_type()));
  }
  return absl::OkStatus();
}

std::string ScriptedModel::FreezeAllButLastChild() {
  for (const auto& child : module_->named_children()) trainable_child_ = child.name;
  for (const auto& p : module_->named_parameters()) {
    if (!absl::StartsWith(p.name, trainable_child_ + ".")) p.value.set_requires_grad(false);
  }
  return trainable_child_;
}

absl::Status ScriptedModel::WriteArtifact(const std::string& dir, kennel::v1::ModelManifest manifest) {
  module_->eval();
  module_->to(torch::kCPU);
  *manifest.mutable_scripted() = core::DescribeScript(*module_, kennel::v1::LOGITS);
  return core::WriteScriptArtifact(dir, std::move(manifest), *module_);
}

namespace {

absl::StatusOr<std::unique_ptr<TrainableModel>> CreateScriptedModel(const kennel::v1::JobSpec& spec) {
  const kennel::v1::TrainingSpec& t = spec.training();
  ASSIGN_OR_RETURN(std::string bytes, core::ReadFile(t.model_file(), int64_t{1} << 36));
  ASSIGN_OR_RETURN(std::shared_ptr<torch::jit::Module> module, core::LoadTorchScript(bytes, t.model_file()));
  if (core::DescribeScript(*module, kennel::v1::LOGITS).parameters() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        t.model_file(), " has no parameters to train (a frozen module, torch.jit.freeze, keeps its weights as "
                        "constants): save the scripted module without freezing it"));
  }
  // The module must give [N, classes] logits at the job's input size before any trainer starts.
  auto checked = core::CheckTorchScript(*module, spec.preprocess(), spec.model().num_classes(), kennel::v1::LOGITS);
  if (!checked.ok()) return absl::InvalidArgumentError(absl::StrCat(t.model_file(), ": ", checked.status().message()));
  auto model = std::make_unique<ScriptedModel>(std::move(module));
  if (!t.init_weights().empty()) {
    ASSIGN_OR_RETURN(core::StateDict weights, core::ReadWeightsFile(t.init_weights()));
    core::StateDict mine = model->State(), matched;
    for (const auto& [name, tensor] : weights) {
      auto it = mine.find(name);
      if (it != mine.end() && it->second.sizes() == tensor.sizes()) matched[name] = tensor;
    }
    if (matched.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(t.init_weights(), " has no tensor whose name and shape match ",
                                                     t.model_file(), "'s"));
    }
    for (const auto& [name, tensor] : matched) mine[name] = tensor;
    RETURN_IF_ERROR(model->LoadState(mine));
    LOG(INFO) << "initial weights: " << matched.size() << " of " << mine.size() << " tensors from "
              << t.init_weights();
  }
  if (t.freeze_backbone()) {
    const std::string head = model->FreezeAllButLastChild();
    LOG(INFO) << "frozen: every parameter outside " << head << ". (the module's last child)";
  }
  return model;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TrainableModel>> CreateTrainableModel(const kennel::v1::JobSpec& spec) {
  if (spec.model().architecture() == kennel::v1::TORCHSCRIPT) return CreateScriptedModel(spec);
  ASSIGN_OR_RETURN(auto builtin, CreateBuiltinModel(spec));
  return std::unique_ptr<TrainableModel>(std::move(builtin));
}

}  // namespace kennel::trainer
