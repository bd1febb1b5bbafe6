#include "core/ml/models.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/pooling.h>

#include <algorithm>
#include <cctype>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/ml/fused_ops.h"
#include "core/ml/torch_errors.h"
#include "core/model_spec.h"

namespace kennel::core {
namespace {

namespace nn = torch::nn;
using kennel::v1::Architecture;


nn::Conv2d Conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding) {
  return nn::Conv2d(
      nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(false));
}

// torchvision.models.resnet.BasicBlock.
class BasicBlockImpl : public nn::Module {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, nn::Sequential downsample)
      : conv1(register_module("conv1", Conv(inplanes, planes, 3, stride, 1))),
        bn1(register_module("bn1", nn::BatchNorm2d(planes))),
        conv2(register_module("conv2", Conv(planes, planes, 3, 1, 1))),
        bn2(register_module("bn2", nn::BatchNorm2d(planes))),
        downsample(downsample) {
    if (downsample) register_module("downsample", downsample);
  }
  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor identity = downsample ? downsample->forward(x) : x;
    torch::Tensor out = torch::relu(bn1(conv1(x)));
    out = bn2(conv2(out));
    return torch::relu(out + identity);
  }
  nn::Conv2d conv1;
  nn::BatchNorm2d bn1;
  nn::Conv2d conv2;
  nn::BatchNorm2d bn2;
  nn::Sequential downsample;
};
TORCH_MODULE(BasicBlock);

// torchvision.models.resnet.Bottleneck (ResNet v1.5: stride on the 3x3 convolution).
class BottleneckImpl : public nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride, nn::Sequential downsample)
      : conv1(register_module("conv1", Conv(inplanes, planes, 1, 1, 0))),
        bn1(register_module("bn1", nn::BatchNorm2d(planes))),
        conv2(register_module("conv2", Conv(planes, planes, 3, stride, 1))),
        bn2(register_module("bn2", nn::BatchNorm2d(planes))),
        conv3(register_module("conv3", Conv(planes, planes * kExpansion, 1, 1, 0))),
        bn3(register_module("bn3", nn::BatchNorm2d(planes * kExpansion))),
        downsample(downsample) {
    if (downsample) register_module("downsample", downsample);
  }
  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor identity = downsample ? downsample->forward(x) : x;
    torch::Tensor out = torch::relu(bn1(conv1(x)));
    out = torch::relu(bn2(conv2(out)));
    out = bn3(conv3(out));
    return torch::relu(out + identity);
  }
  nn::Conv2d conv1;
  nn::BatchNorm2d bn1;
  nn::Conv2d conv2;
  nn::BatchNorm2d bn2;
  nn::Conv2d conv3;
  nn::BatchNorm2d bn3;
  nn::Sequential downsample;
};
TORCH_MODULE(Bottleneck);

// The classifier head, registered as "fc": Linear, or Sequential(Linear, ReLU, Linear).
class ClassifierHead {
 public:
  ClassifierHead(nn::Module& owner, const kennel::v1::ModelSpec& spec, int64_t features) {
    if (spec.head() == kennel::v1::MLP) {
      mlp_ = owner.register_module(
          "fc", nn::Sequential(nn::Linear(features, spec.head_hidden()), nn::ReLU(),
                               nn::Linear(spec.head_hidden(), spec.num_classes())));
    } else {
      linear_ = owner.register_module("fc", nn::Linear(features, spec.num_classes()));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return mlp_ ? mlp_->forward(x) : linear_->forward(x);
  }

 private:
  nn::Linear linear_{nullptr};
  nn::Sequential mlp_{nullptr};
};

class ResNet : public Classifier {
 public:
  explicit ResNet(const kennel::v1::ModelSpec& spec) : Classifier(spec) {
    std::vector<int64_t> blocks;
    bool bottleneck = false;
    switch (spec.architecture()) {
      case kennel::v1::RESNET18: blocks = {2, 2, 2, 2}; break;
      case kennel::v1::RESNET34: blocks = {3, 4, 6, 3}; break;
      default: blocks = {3, 4, 6, 3}; bottleneck = true; break;
    }
    conv1_ = register_module("conv1", Conv(spec.in_channels(), 64, 7, 2, 3));
    bn1_ = register_module("bn1", nn::BatchNorm2d(64));
    const int64_t widths[] = {64, 128, 256, 512};
    for (int i = 0; i < 4; ++i) {
      layers_[i] = register_module(absl::StrCat("layer", i + 1),
                                   MakeLayer(bottleneck, widths[i], blocks[i], i == 0 ? 1 : 2));
    }
    head_ = std::make_unique<ClassifierHead>(*this, spec, inplanes_);
    InitLikeTorchvision();
  }

  torch::Tensor forward(torch::Tensor x) override {
    x = torch::relu(bn1_(conv1_(x)));
    x = torch::max_pool2d(x, 3, 2, 1);
    for (auto& layer : layers_) x = layer->forward(x);
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    return head_->forward(x);
  }

 private:
  nn::Sequential MakeLayer(bool bottleneck, int64_t planes, int64_t count, int64_t stride) {
    const int64_t expansion = bottleneck ? BottleneckImpl::kExpansion : BasicBlockImpl::kExpansion;
    nn::Sequential layer;
    for (int64_t b = 0; b < count; ++b) {
      nn::Sequential downsample{nullptr};
      const int64_t s = b == 0 ? stride : 1;
      if (b == 0 && (s != 1 || inplanes_ != planes * expansion)) {
        downsample = nn::Sequential(Conv(inplanes_, planes * expansion, 1, s, 0),
                                    nn::BatchNorm2d(planes * expansion));
      }
      if (bottleneck) {
        layer->push_back(Bottleneck(inplanes_, planes, s, downsample));
      } else {
        layer->push_back(BasicBlock(inplanes_, planes, s, downsample));
      }
      inplanes_ = planes * expansion;
    }
    return layer;
  }

  // torchvision: Kaiming-normal (fan_out, relu) convolutions, BN weight 1 / bias 0; Linear
  // keeps PyTorch's default.
  void InitLikeTorchvision() {
    torch::NoGradGuard no_grad;
    for (auto& module : modules(/*include_self=*/false)) {
      if (auto* conv = module->as<nn::Conv2d>()) {
        nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      } else if (auto* bn = module->as<nn::BatchNorm2d>()) {
        nn::init::ones_(bn->weight);
        nn::init::zeros_(bn->bias);
      }
    }
  }

  int64_t inplanes_ = 64;
  nn::Conv2d conv1_{nullptr};
  nn::BatchNorm2d bn1_{nullptr};
  nn::Sequential layers_[4] = {nn::Sequential{nullptr}, nn::Sequential{nullptr},
                               nn::Sequential{nullptr}, nn::Sequential{nullptr}};
  std::unique_ptr<ClassifierHead> head_;
};

// BENCHMARKS.md T1: conv 1->32, conv 32->64 (3x3, pad 1, each followed by ReLU and 2x2 max
// pool), fc1 3136->128, ReLU, fc 128->N. Expects 28x28 inputs.
class SmallCnn : public Classifier {
 public:
  explicit SmallCnn(const kennel::v1::ModelSpec& spec) : Classifier(spec) {
    conv1_ = register_module(
        "conv1", nn::Conv2d(nn::Conv2dOptions(spec.in_channels(), 32, 3).padding(1)));
    conv2_ = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1)));
    fc1_ = register_module("fc1", nn::Linear(64 * 7 * 7, 128));
    fc_ = register_module("fc", nn::Linear(128, spec.num_classes()));
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = ReluMaxPool2x2(conv1_(x));
    x = ReluMaxPool2x2(conv2_(x));
    x = torch::relu(fc1_(x.flatten(1)));
    return fc_(x);
  }

 private:
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  nn::Linear fc1_{nullptr}, fc_{nullptr};
};

}  // namespace

void Classifier::FreezeBackbone() {
  backbone_frozen_ = true;
  for (auto& item : named_parameters(/*recurse=*/true)) {
    if (!absl::StartsWith(item.key(), kHeadPrefix)) item.value().set_requires_grad(false);
  }
  train(is_training());
}

void Classifier::train(bool on) {
  torch::nn::Module::train(on);
  if (!backbone_frozen_) return;
  for (auto& child : named_children()) {
    if (child.key() != "fc") child.value()->eval();
  }
}

absl::StatusOr<std::shared_ptr<Classifier>> CreateModel(const kennel::v1::ModelSpec& in) {
  auto spec = NormalizeModelSpec(in);
  if (!spec.ok()) return spec.status();
  if (IsUserCode(spec->architecture())) {
    return absl::InvalidArgumentError(absl::StrCat("a ", ArchitectureName(spec->architecture()),
                                                   " model is loaded from its file (core/ml/artifact.h), not built"));
  }
  return CallTorch("building model", [&]() -> std::shared_ptr<Classifier> {
    if (spec->architecture() == kennel::v1::SMALL_CNN) return std::make_shared<SmallCnn>(*spec);
    return std::make_shared<ResNet>(*spec);
  });
}

void ToChannelsLast(const std::vector<torch::Tensor>& parameters) {
  torch::NoGradGuard no_grad;
  for (torch::Tensor p : parameters) {
    if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  }
}

absl::StatusOr<torch::Tensor> Forward(Classifier& model, const torch::Tensor& input) {
  if (input.dim() != 4 || input.size(1) != model.spec().in_channels()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model expects input [N, ", model.spec().in_channels(),
                     ", H, W], got a tensor of shape ", c10::str(input.sizes())));
  }
  return CallTorch("forward", [&] { return model.forward(input); },
                   absl::StatusCode::kInvalidArgument);
}

}  // namespace kennel::core
