// The image pipeline shared by training and serving (OpenCV, no torch): decode JPEG/PNG from
// bytes with limits checked on the header before any pixel is decoded, then resize / crop /
// normalise into CHW floats following a model's PreprocessSpec, plus seeded training
// augmentation. Every function is thread-safe and reentrant.
#ifndef KENNEL_CORE_IMAGE_H_
#define KENNEL_CORE_IMAGE_H_

#include <cstdint>
#include <random>
#include <string>
#include "absl/strings/string_view.h"

#include <opencv2/core/mat.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kennel/v1/model.pb.h"

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

// Decodes to 8-bit RGB (channels 3) or grayscale (channels 1), whatever the stored colour
// type (gray, alpha, 16-bit, palette, CMYK are converted). Limits are enforced from the
// header first. When min_shorter_side > 0 and the image is at least twice that on its
// shorter side, JPEGs are decoded at 1/2, 1/4 or 1/8 scale (never below min_shorter_side),
// which is several times faster. INVALID_ARGUMENT on any bad input, including truncation.
absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, int channels,
                                    const DecodeLimits& limits = {}, int min_shorter_side = 0);

// Fills in defaults (channels 3, bilinear, mean 0 / std 1) and validates sizes and lengths.
absl::StatusOr<kennel::v1::PreprocessSpec> NormalizePreprocessSpec(
    kennel::v1::PreprocessSpec spec);

// Number of floats Preprocess writes: channels * height * width.
int64_t PreprocessedSize(const kennel::v1::PreprocessSpec& spec);

// The shorter side an image needs before the evaluation transform (for DecodeImage's
// reduced-scale decode).
int DecodeHint(const kennel::v1::PreprocessSpec& spec);

// Evaluation transform: resize (shorter side to resize_shorter, or straight to height x
// width when it is 0), center crop, scale to [0,1], normalise, write CHW floats to `out`
// (PreprocessedSize(spec) floats). `image` is 8-bit, 1 or spec.channels() channels (RGB).
absl::Status PreprocessInto(const cv::Mat& image, const kennel::v1::PreprocessSpec& spec,
                            float* out);

// Training augmentation, torchvision's RandomResizedCrop + RandomHorizontalFlip.
struct Augmentation {
  bool random_resized_crop = true;
  double min_scale = 0.08;
  double max_scale = 1.0;
  double min_ratio = 3.0 / 4.0;
  double max_ratio = 4.0 / 3.0;
  bool horizontal_flip = true;
};

// Crop / flip drawn from `rng`, then the same resize-normalise as PreprocessInto (the crop
// is resized straight to height x width). Same seed, same image => same output.
absl::Status AugmentInto(const cv::Mat& image, const kennel::v1::PreprocessSpec& spec,
                         const Augmentation& augmentation, std::mt19937_64& rng, float* out);

}  // namespace kennel::core

#endif  // KENNEL_CORE_IMAGE_H_
