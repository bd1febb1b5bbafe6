// What the training loop needs of a model, whatever its kind: forward to logits, parameters
// and buffers in a fixed order (the same on every rank), train/eval, placement on a device,
// and its state by name (checkpoints, the run's digest). The loop (trainer.cc) sees only this;
// a new kind of model implements it and touches nothing else there.
//
// BuiltinModel is the kind Kennel writes itself (core::Classifier: the small CNN and
// ResNet-18/34/50), with torchvision's initial weights and the frozen backbone.
#ifndef KENNEL_TRAINER_NODE_TRAINABLE_MODEL_H_
#define KENNEL_TRAINER_NODE_TRAINABLE_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/ml/models.h"
#include "core/ml/weights.h"
#include "kennel/v1/job.pb.h"
#include "kennel/v1/model.pb.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace kennel::trainer {

// The model half of a checkpoint.
class CheckpointableModel {
 public:
  virtual ~CheckpointableModel() = default;
  // Every parameter and buffer by name.
  virtual core::StateDict State() const = 0;
  // Strict: INVALID_ARGUMENT naming what is missing, extra or of another shape.
  virtual absl::Status LoadState(const core::StateDict& state) = 0;
};

class TrainableModel : public CheckpointableModel {
 public:
  // Logits [N, classes] for images [N, C, H, W] on the model's device.
  virtual torch::Tensor Forward(const torch::Tensor& images) = 0;
  // Every parameter (trainable or not), in the order the gradient buckets use.
  virtual std::vector<torch::Tensor> Parameters() const = 0;
  // The floating-point buffers (batch-norm statistics): made equal to rank 0's every step.
  virtual std::vector<torch::Tensor> FloatBuffers() const = 0;
  virtual void SetTraining(bool on) = 0;
  // Moves parameters and buffers; channels_last turns 4-D weights NHWC (CUDA convolutions).
  virtual void To(torch::Device device, bool channels_last) = 0;
  // The trained model as an artifact of its own kind (the job's `manifest`, completed here).
  virtual absl::Status WriteArtifact(const std::string& dir, kennel::v1::ModelManifest manifest) = 0;
};

class BuiltinModel : public TrainableModel {
 public:
  explicit BuiltinModel(std::shared_ptr<core::Classifier> model) : model_(std::move(model)) {}

  torch::Tensor Forward(const torch::Tensor& images) override { return model_->forward(images); }
  std::vector<torch::Tensor> Parameters() const override { return model_->parameters(); }
  std::vector<torch::Tensor> FloatBuffers() const override;
  void SetTraining(bool on) override { model_->train(on); }
  void To(torch::Device device, bool channels_last) override;
  core::StateDict State() const override { return core::GetStateDict(*model_); }
  absl::Status LoadState(const core::StateDict& state) override { return core::LoadStateDict(*model_, state); }
  absl::Status WriteArtifact(const std::string& dir, kennel::v1::ModelManifest manifest) override;

  const std::shared_ptr<core::Classifier>& classifier() const { return model_; }

 private:
  std::shared_ptr<core::Classifier> model_;
};

// A TorchScript module (training.model_file): its parameters trained in place, saved as
// TorchScript. --init-weights loads the tensors whose names match (at least one must);
// --freeze-backbone freezes every parameter outside the module's last child (its head).
class ScriptedModel : public TrainableModel {
 public:
  explicit ScriptedModel(std::shared_ptr<torch::jit::Module> module) : module_(std::move(module)) {}

  torch::Tensor Forward(const torch::Tensor& images) override;
  std::vector<torch::Tensor> Parameters() const override;
  std::vector<torch::Tensor> FloatBuffers() const override;
  void SetTraining(bool on) override;
  void To(torch::Device device, bool channels_last) override;
  core::StateDict State() const override;
  absl::Status LoadState(const core::StateDict& state) override;
  absl::Status WriteArtifact(const std::string& dir, kennel::v1::ModelManifest manifest) override;

  // Freezes every parameter outside the last child; returns that child's name.
  std::string FreezeAllButLastChild();

 private:
  std::shared_ptr<torch::jit::Module> module_;
  std::string trainable_child_;  // Set by FreezeAllButLastChild: kept in train mode alone.
};

// The job's built-in model: built from its spec with torchvision's initialisation, then
// --init-weights loaded (not strictly: a new head is expected) and --freeze-backbone applied.
absl::StatusOr<std::unique_ptr<BuiltinModel>> CreateBuiltinModel(const kennel::v1::JobSpec& spec);

// The job's model of either kind. For TORCHSCRIPT: INVALID_ARGUMENT for a file that is not
// TorchScript, a frozen module (no parameters to train), or an output that is not
// [N, num_classes] logits on a batch of the job's input size.
absl::StatusOr<std::unique_ptr<TrainableModel>> CreateTrainableModel(const kennel::v1::JobSpec& spec);

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_TRAINABLE_MODEL_H_
