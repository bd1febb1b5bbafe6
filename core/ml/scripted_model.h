// The user's own model as a TorchScript module (torch.jit.script or torch.jit.trace, saved with
// torch.jit.save): loaded, checked on a dummy batch, run and saved. A TorchScript archive is
// code, not data: it may do anything Python's TorchScript subset can (PyTorch's own warning);
// only admins import one, and the weights-only path stays the default for .pth/.safetensors.
#ifndef KENNEL_CORE_ML_SCRIPTED_MODEL_H_
#define KENNEL_CORE_ML_SCRIPTED_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kennel/v1/model.pb.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace kennel::core {

// Checks what the bytes are before LibTorch's loader sees them (core/file_type: a
// torch.save state_dict, safetensors, an AOTInductor package, ... each named), then loads the
// module on the CPU. INVALID_ARGUMENT, naming `what` (the file), for anything else.
absl::StatusOr<std::shared_ptr<torch::jit::Module>> LoadTorchScript(absl::string_view bytes,
                                                                  const std::string& what);

// Runs the module in eval mode on a seeded batch of two at the declared input size and checks
// its output: a tensor [2, num_classes], finite, and for PROBABILITIES rows in [0, 1] summing to
// 1. INVALID_ARGUMENT saying which (the input size it refused, the shape it gave against the
// class names' count). Returns what the manifest records.
absl::StatusOr<kennel::v1::ScriptedModel> CheckTorchScript(torch::jit::Module& module,
                                                           const kennel::v1::PreprocessSpec& preprocess,
                                                           int num_classes, kennel::v1::OutputKind output);

// The line of a LibTorch error that says what went wrong: TorchScript's interpreter wraps it
// ("The following operation failed ...", a TorchScript traceback, then "RuntimeError: ...");
// other messages run on with C++ stacks after their first line.
std::string ErrorLine(absl::string_view message);

// What CheckTorchScript checks of a model's output for a batch of two, whatever ran it: shape
// [2, num_classes], finite floating-point values, rows that are probabilities when `output`
// says so. INVALID_ARGUMENT saying what is wrong.
absl::Status CheckClassifierOutput(const at::Tensor& y, int num_classes, kennel::v1::OutputKind output);

// The module's parameters (recursively, in its order) as tensors.
std::vector<at::Tensor> ScriptParameters(const torch::jit::Module& module);

// What a manifest records of `module`: its output kind, parameter count, this LibTorch.
kennel::v1::ScriptedModel DescribeScript(const torch::jit::Module& module, kennel::v1::OutputKind output);

// torch.jit.save's bytes for `module`.
absl::StatusOr<std::string> SaveTorchScript(torch::jit::Module& module);

// The module's forward on a batch: its output tensor (logits or probabilities, as it declares).
// Runs with the graph executor's optimiser off: TorchScript's profiling executor otherwise
// specialises per input shape, so the first calls at every batch size would be slow; the
// plain interpreter runs the same operators from the first call on.
absl::StatusOr<at::Tensor> ScriptForward(torch::jit::Module& module, const at::Tensor& batch);
// The same, throwing as LibTorch does (for callers already inside core::CallTorch).
at::Tensor ScriptOutput(torch::jit::Module& module, const at::Tensor& batch);

}  // namespace kennel::core

#endif  // KENNEL_CORE_ML_SCRIPTED_MODEL_H_
