// The user's model as an AOTInductor package (.pt2), served with PyTorch's own loader
// (torch::inductor::AOTIModelPackageLoader) in a build whose LibTorch has it (PyTorch 2.6+, the
// torch2 build); Debian's LibTorch 1.13 has none, and says so. Before the loader sees a
// package, its metadata is read without LibTorch (core/aoti_package.h) and a package compiled
// by another PyTorch release is refused, naming both versions.
#ifndef KENNEL_CORE_ML_AOTI_MODEL_H_
#define KENNEL_CORE_ML_AOTI_MODEL_H_

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/aoti_package.h"
#include "kennel/v1/model.pb.h"

namespace kennel::core {

// True when this build's LibTorch can load AOTInductor packages.
bool HaveAotInductor();

class AotiModel {
 public:
  ~AotiModel();
  AotiModel(const AotiModel&) = delete;
  AotiModel& operator=(const AotiModel&) = delete;

  // Checks and loads the package at `path`: INVALID_ARGUMENT for a file that is not a package
  // or one the loader refuses; FAILED_PRECONDITION for another PyTorch release's package, a
  // CUDA package where no GPU is visible, or a build without AOTInductor.
  static absl::StatusOr<std::shared_ptr<AotiModel>> Load(const std::string& path);

  const AotiPackageInfo& info() const { return info_; }

  // The model's first output for `batch` (a float32 tensor on the package's device; a batch of
  // one runs as two, since torch.export compiles dynamic sizes for 2 and up). Throws as
  // LibTorch does, also for an input of a size or layout the package was not compiled for.
  // Thread-safe: concurrent calls take turns on the one compiled model.
  at::Tensor Run(const at::Tensor& batch);

 private:
  struct Loader;
  AotiModel(AotiPackageInfo info, std::unique_ptr<Loader> loader);
  AotiPackageInfo info_;
  std::unique_ptr<Loader> loader_;
};

// Runs the package on a batch of two random inputs at the declared input size and checks the
// output as CheckTorchScript does; what a manifest records of it. INVALID_ARGUMENT saying what
// is wrong (an input the package refuses, e.g. one exported without a dynamic batch).
absl::StatusOr<kennel::v1::ScriptedModel> CheckAotiModel(AotiModel& model, const kennel::v1::PreprocessSpec& preprocess,
                                                         int num_classes, kennel::v1::OutputKind output);

}  // namespace kennel::core

#endif  // KENNEL_CORE_ML_AOTI_MODEL_H_
