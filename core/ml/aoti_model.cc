#include "core/ml/aoti_model.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <stdexcept>

#if __has_include(<torch/csrc/inductor/aoti_package/model_package_loader.h>)
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#define KENNEL_HAVE_AOTI 1
#else
#define KENNEL_HAVE_AOTI 0
#endif

#include "absl/strings/str_cat.h"
#include "core/ml/scripted_model.h"
#include "core/ml/torch_errors.h"
#include "core/status_macros.h"

namespace kennel::core {

#if KENNEL_HAVE_AOTI
struct AotiModel::Loader {
  explicit Loader(const std::string& path) : package(path, "model") {}
  torch::inductor::AOTIModelPackageLoader package;  // Unpacks to a temporary folder it removes.
};
#else
struct AotiModel::Loader {};
#endif

bool HaveAotInductor() { return KENNEL_HAVE_AOTI != 0; }

AotiModel::AotiModel(AotiPackageInfo info, std::unique_ptr<Loader> loader)
    : info_(std::move(info)), loader_(std::move(loader)) {}

AotiModel::~AotiModel() = default;

absl::StatusOr<std::shared_ptr<AotiModel>> AotiModel::Load(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  file.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(file.tellg());
  ASSIGN_OR_RETURN(AotiPackageInfo info, ReadAotiPackageInfo(ZipReadFromStream(file), size, path));
  file.close();
#if KENNEL_HAVE_AOTI
  RETURN_IF_ERROR(CheckAotiTorchVersion(info, TORCH_VERSION, path));
  if (info.device == "cuda" && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " was compiled for CUDA, and this LibTorch sees no GPU: serve it on a GPU node, or "
                           "compile the model for the CPU"));
  }
  // A compiled model trusts its inputs' sizes unless told to check them (a batch or image size
  // it was not compiled for is read out of bounds): the generated code checks every input's
  // shape, strides, dtype and device when this is set at its first run. A few comparisons a
  // batch. A user who set it, to anything, keeps their setting.
  static std::once_flag check_inputs;
  std::call_once(check_inputs, [] { ::setenv("AOTI_RUNTIME_CHECK_INPUTS", "1", /*overwrite=*/0); });
  auto loader = CallTorch("loading the AOTInductor package", [&] {
    return std::make_unique<Loader>(path);
  }, absl::StatusCode::kInvalidArgument);
  if (!loader.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", ErrorLine(loader.status().message())));
  return std::shared_ptr<AotiModel>(new AotiModel(std::move(info), *std::move(loader)));
#else
  return absl::FailedPreconditionError(absl::StrCat(
      path, " is an AOTInductor package (compiled by PyTorch ",
      info.torch_version.empty() ? "of an unrecorded version" : info.torch_version, "), and this Kennel build's LibTorch ",
      TORCH_VERSION, " has no AOTInductor: use Kennel's PyTorch 2.x build (README, \"Two LibTorch builds\")"));
#endif
}

at::Tensor AotiModel::Run(const at::Tensor& batch) {
#if KENNEL_HAVE_AOTI
  // torch.export takes a dynamic size to be at least 2 (its 0/1 specialisation), so the
  // compiled model refuses a batch of one: it runs as a batch of two, the row repeated.
  const bool single = batch.dim() > 0 && batch.size(0) == 1;
  const at::Tensor input = single ? at::cat({batch, batch}) : batch.contiguous();
  std::vector<at::Tensor> out;
  try {
    out = loader_->package.run({input});
  } catch (const c10::Error& e) {
    // The compiled code writes its reason to stderr and returns a bare error code, which the
    // runner reports as "run_func_(...) API call failed": say what was refused.
    if (std::string(e.what()).find("API call failed") == std::string::npos) throw;
    throw std::invalid_argument(absl::StrCat(
        "the compiled model refused an input of shape ", c10::str(input.sizes()),
        " (its reason is in this process's log: \"Error: input_handles[0]: ...\"; a batch size outside the "
        "range it was compiled for, or another input size?)"));
  }
  if (out.empty()) throw std::invalid_argument("the package's model returned no tensor");
  return single ? out[0].narrow(0, 0, 1) : out[0];
#else
  (void)batch;
  throw std::logic_error("this build has no AOTInductor");
#endif
}

absl::StatusOr<kennel::v1::ScriptedModel> CheckAotiModel(AotiModel& model, const kennel::v1::PreprocessSpec& p,
                                                         int num_classes, kennel::v1::OutputKind output) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  const torch::Device device = model.info().device == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  const torch::Tensor input = torch::rand({2, p.channels(), p.height(), p.width()}).to(device);
  auto out = CallTorch("forward", [&] { return model.Run(input).to(torch::kCPU); }, absl::StatusCode::kInvalidArgument);
  if (!out.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the package refuses input [2, ", p.channels(), ", ", p.height(), ", ", p.width(),
        "] (float32, the declared input size; export it with a dynamic batch dimension, torch.export.Dim): ",
        ErrorLine(out.status().message())));
  }
  RETURN_IF_ERROR(CheckClassifierOutput(*out, num_classes, output));
  kennel::v1::ScriptedModel info;
  info.set_output(output == kennel::v1::PROBABILITIES ? kennel::v1::PROBABILITIES : kennel::v1::LOGITS);
  info.set_checked_with_torch(TORCH_VERSION);
  info.set_input_dtype("float32");
  info.set_compiled_with_torch(model.info().torch_version);
  info.set_device(model.info().device);
  return info;
}

}  // namespace kennel::core
