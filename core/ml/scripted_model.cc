#include "core/ml/scripted_model.h"

#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/file_type.h"
#include "core/ml/torch_errors.h"
#include "core/status_macros.h"

namespace kennel::core {

std::string ErrorLine(absl::string_view message) {
  const size_t error = message.rfind("Error: ");
  if (error != absl::string_view::npos) {
    const size_t start = message.rfind('\n', error);
    const absl::string_view line = message.substr(start == absl::string_view::npos ? 0 : start + 1);
    return std::string(line.substr(0, line.find('\n')));
  }
  return std::string(message.substr(0, message.find('\n')));
}

absl::StatusOr<std::shared_ptr<torch::jit::Module>> LoadTorchScript(absl::string_view bytes, const std::string& what) {
  const FileType type = DetectFileType(bytes.substr(0, kFileTypeProbeBytes));
  if (type != FileType::kTorchScript) {
    std::string hint;
    if (type == FileType::kTorchZip || type == FileType::kSafetensors) {
      hint = "; weights alone are imported with --arch (a built-in architecture)";
    }
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", DescribeFileType(type), ", not a TorchScript archive (torch.jit.save)", hint));
  }
  auto module = CallTorch("loading TorchScript", [&] {
    std::istringstream in{std::string(bytes)};
    return std::make_shared<torch::jit::Module>(torch::jit::load(in, torch::kCPU));
  }, absl::StatusCode::kInvalidArgument);
  if (!module.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": LibTorch could not load it as TorchScript: ",
                                                   ErrorLine(module.status().message())));
  }
  (*module)->eval();
  return module;
}

at::Tensor ScriptOutput(torch::jit::Module& module, const at::Tensor& batch) {
  torch::jit::setGraphExecutorOptimize(false);
  torch::jit::IValue out = module.forward({batch});
  if (!out.isTensor()) {
    throw std::invalid_argument(absl::StrCat("the model returned a ", out.tagKind(), ", not a tensor"));
  }
  return out.toTensor();
}

absl::StatusOr<at::Tensor> ScriptForward(torch::jit::Module& module, const at::Tensor& batch) {
  return CallTorch("forward", [&] { return ScriptOutput(module, batch); }, absl::StatusCode::kInvalidArgument);
}

std::vector<at::Tensor> ScriptParameters(const torch::jit::Module& module) {
  std::vector<at::Tensor> out;
  for (const auto& p : module.parameters()) out.push_back(p);
  return out;
}

kennel::v1::ScriptedModel DescribeScript(const torch::jit::Module& module, kennel::v1::OutputKind output) {
  kennel::v1::ScriptedModel info;
  info.set_output(output == kennel::v1::PROBABILITIES ? kennel::v1::PROBABILITIES : kennel::v1::LOGITS);
  int64_t parameters = 0;
  for (const auto& p : module.parameters()) parameters += p.numel();
  info.set_parameters(parameters);
  info.set_checked_with_torch(TORCH_VERSION);
  info.set_input_dtype("float32");
  return info;
}

absl::StatusOr<kennel::v1::ScriptedModel> CheckTorchScript(torch::jit::Module& module,
                                                           const kennel::v1::PreprocessSpec& p, int num_classes,
                                                           kennel::v1::OutputKind output) {
  module.eval();
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  const torch::Tensor input = torch::rand({2, p.channels(), p.height(), p.width()});
  auto out = ScriptForward(module, input);
  if (!out.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the model refuses input [2, ", p.channels(), ", ", p.height(), ", ",
                                                   p.width(), "] (float32, the declared input size): ",
                                                   ErrorLine(out.status().message())));
  }
  RETURN_IF_ERROR(CheckClassifierOutput(*out, num_classes, output));
  return DescribeScript(module, output);
}

absl::Status CheckClassifierOutput(const at::Tensor& y, int num_classes, kennel::v1::OutputKind output) {
  torch::NoGradGuard no_grad;
  if (y.dim() != 2 || y.size(0) != 2 || y.size(1) != num_classes) {
    return absl::InvalidArgumentError(absl::StrCat("the model's output for a batch of 2 has shape ", c10::str(y.sizes()),
                                                   "; with the ", num_classes, " class names given it must be [2, ",
                                                   num_classes, "]"));
  }
  if (!y.is_floating_point() || !torch::isfinite(y).all().item<bool>()) {
    return absl::InvalidArgumentError("the model's output is not finite floating-point values (NaN, infinity or integers)");
  }
  if (output == kennel::v1::PROBABILITIES) {
    const torch::Tensor f = y.to(torch::kDouble);
    const double low = f.min().item<double>(), high = f.max().item<double>();
    const double worst = (f.sum(1) - 1).abs().max().item<double>();
    if (low < 0 || high > 1 || worst > 1e-3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "declared --output-kind probabilities, but the rows are not probabilities (values in [", low, ", ", high,
          "], row sums off by up to ", worst, "): import it with --output-kind logits"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SaveTorchScript(torch::jit::Module& module) {
  return CallTorch("saving TorchScript", [&] {
    std::ostringstream out;
    module.save(out);
    return out.str();
  });
}

}  // namespace kennel::core
