// What an AOTInductor package (.pt2, torch._inductor.aoti_compile_and_package) says of itself,
// read before LibTorch loads it: a package holds a native library compiled against one
// PyTorch's headers, so loading one made by another version can crash the process instead of
// failing. The version is the one the package's metadata records under "torch_version"
// (inductor_configs={"aot_inductor.metadata": {"torch_version": torch.__version__}}): PyTorch
// records none of its own. Torch-free.
#ifndef KENNEL_CORE_AOTI_PACKAGE_H_
#define KENNEL_CORE_AOTI_PACKAGE_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/zip_entries.h"

namespace kennel::core {

struct AotiPackageInfo {
  std::string archive;  // The package's top folder ("model" for model.pt2).
  // The model's metadata (AOTI_DEVICE_KEY, the user's own keys, ...).
  std::map<std::string, std::string> metadata;
  std::string torch_version;  // metadata["torch_version"]; empty when not recorded.
  std::string device;         // metadata["AOTI_DEVICE_KEY"]: "cpu" or "cuda".
};

// The metadata of the package's model named "model" (the default of aoti_compile_and_package).
// INVALID_ARGUMENT, prefixed with `what`, for a file that is not an AOTInductor package (or has
// no model "model", or unreadable metadata).
absl::StatusOr<AotiPackageInfo> ReadAotiPackageInfo(const ZipRead& read, uint64_t size, absl::string_view what);

// OK when the package was compiled by the same PyTorch release as `runtime_torch` (local
// labels such as "+cu130" or "+cpu" aside). FAILED_PRECONDITION naming both versions
// otherwise, INVALID_ARGUMENT saying how to record it when the package does not say.
absl::Status CheckAotiTorchVersion(const AotiPackageInfo& info, absl::string_view runtime_torch,
                                   absl::string_view what);

}  // namespace kennel::core

#endif  // KENNEL_CORE_AOTI_PACKAGE_H_
