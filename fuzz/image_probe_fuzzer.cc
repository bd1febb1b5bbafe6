// The image header probe and the pre-decode checks every uploaded or classified image meets
// first: any bytes must give an image description or INVALID_ARGUMENT, never a crash, an
// out-of-bounds read or a description that breaks the limits it was checked against.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/image_probe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto probed = kennel::core::ProbeImage(bytes);
  if (probed.ok() && (probed->width <= 0 || probed->height <= 0)) std::abort();
  kennel::core::DecodeLimits limits;
  limits.max_side = 4096;
  limits.max_pixels = 1 << 22;
  auto checked = kennel::core::CheckDecodable(bytes, limits);
  if (checked.ok()) {
    if (!probed.ok()) std::abort();  // Checks only add to the probe.
    if (checked->width > limits.max_side || checked->height > limits.max_side ||
        int64_t{checked->width} * checked->height > limits.max_pixels) {
      std::abort();
    }
  } else if (checked.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }
  return 0;
}
