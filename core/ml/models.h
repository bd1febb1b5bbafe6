// Image classifiers shared by trainer and inference node: a small CNN for 28x28 images and
// ResNet-18/34/50 whose parameter and buffer names equal torchvision's, so a torchvision
// state_dict loads directly (see weights.h).
//
// Every classifier's last layer(s) are registered as "fc" (Linear, or the seed's
// Sequential(Linear, ReLU, Linear) head); everything else is the backbone. Modules are not
// thread-safe: one thread trains or runs a model at a time (inference uses one instance per
// batcher).
#ifndef KENNEL_CORE_ML_MODELS_H_
#define KENNEL_CORE_ML_MODELS_H_

#include <torch/nn/module.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "core/model_spec.h"
#include "kennel/v1/model.pb.h"

namespace kennel::core {

// Name prefix of head parameters in every Kennel classifier.
inline constexpr absl::string_view kHeadPrefix = "fc.";

class Classifier : public torch::nn::Module {
 public:
  // x: [N, C, H, W] float. Returns logits [N, num_classes]. Throws c10::Error on a wrong
  // shape; call through Forward() below to get a Status instead.
  virtual torch::Tensor forward(torch::Tensor x) = 0;

  // Stops gradients into the backbone and keeps its batch-norm layers in eval mode even when
  // the model is put in training mode, so a frozen backbone is really frozen.
  void FreezeBackbone();

  void train(bool on = true) override;

  const kennel::v1::ModelSpec& spec() const { return spec_; }

 protected:
  explicit Classifier(kennel::v1::ModelSpec spec) : spec_(std::move(spec)) {}

 private:
  kennel::v1::ModelSpec spec_;
  bool backbone_frozen_ = false;
};

// Validates `spec` (fills defaults: in_channels 3, head LINEAR, head_hidden 128) and builds
// the model with torchvision's initialisation. INVALID_ARGUMENT on a bad spec.
absl::StatusOr<std::shared_ptr<Classifier>> CreateModel(const kennel::v1::ModelSpec& spec);

// Turns every 4-D tensor of `parameters` (convolution weights) NHWC in place: the layout CUDA's
// bf16/fp16 tensor-core convolutions want. Any kind of model's parameters.
void ToChannelsLast(const std::vector<torch::Tensor>& parameters);

// Forward pass with exceptions turned into INVALID_ARGUMENT (wrong input shape) or INTERNAL.
absl::StatusOr<torch::Tensor> Forward(Classifier& model, const torch::Tensor& input);

}  // namespace kennel::core

#endif  // KENNEL_CORE_ML_MODELS_H_
