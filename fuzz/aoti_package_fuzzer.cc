// An AOTInductor package's metadata, read before LibTorch's loader sees the package (a .pt2
// a user imports, or an artifact's model.pt2): any bytes give a package description or a
// clear error, never a crash, an out-of-bounds read or an allocation the file does not back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/aoti_package.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto info = kennel::core::ReadAotiPackageInfo(kennel::core::ZipReadFromBytes(bytes), size, "fuzzed.pt2");
  if (info.ok()) {
    if (info->device != "cpu" && info->device != "cuda") std::abort();
    (void)kennel::core::CheckAotiTorchVersion(*info, "2.11.0", "fuzzed.pt2");
  } else if (info.status().message().empty()) {
    std::abort();
  }
  return 0;
}
