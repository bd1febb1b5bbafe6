// What can be learnt about an encoded image without decoding a pixel (no OpenCV, no torch):
// its format and size from the JPEG SOF / PNG IHDR header, whether it fits the limits, and
// whether it is complete. Dataset indexing uses it to skip unreadable files; the decoder
// (core/ml/image.h) runs it before handing any bytes to OpenCV. Thread-safe.
#ifndef KENNEL_CORE_IMAGE_PROBE_H_
#define KENNEL_CORE_IMAGE_PROBE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kennel::core {

enum class ImageFormat { kJpeg, kPng };

// What the header says, read without decoding pixels.
struct ImageInfo {
  ImageFormat format = ImageFormat::kJpeg;
  int width = 0;
  int height = 0;
  int channels = 0;   // As stored: 1 gray, 2 gray+alpha, 3 colour, 4 RGBA / CMYK.
  int bit_depth = 8;
};

struct DecodeLimits {
  int64_t max_encoded_bytes = 16 << 20;
  int64_t max_pixels = 50'000'000;  // A 50-megapixel photo (8660 x 5773).
  int max_side = 30'000;
};

// Reads the JPEG SOF / PNG IHDR header. INVALID_ARGUMENT for empty, unknown-format,
// truncated-header or zero-sized images.
absl::StatusOr<ImageInfo> ProbeImage(absl::string_view bytes);

// ProbeImage plus every check that needs no decoding: the encoded size and pixel limits, and
// truncation (a JPEG without its end marker after the scan header, a PNG without IEND).
// INVALID_ARGUMENT saying which.
absl::StatusOr<ImageInfo> CheckDecodable(absl::string_view bytes, const DecodeLimits& limits);

}  // namespace kennel::core

#endif  // KENNEL_CORE_IMAGE_PROBE_H_
