// The image pipeline shared by training and serving (OpenCV, no torch): decode JPEG/PNG from
// bytes with limits checked on the header before any pixel is decoded, then resize / crop /
// normalise into CHW floats following a model's PreprocessSpec, plus seeded training
// augmentation. Every function is thread-safe and reentrant.
#ifndef KENNEL_CORE_ML_IMAGE_H_
#define KENNEL_CORE_ML_IMAGE_H_

#include <cstdint>
#include <random>
#include <string>
#include "absl/strings/string_view.h"

#include <opencv2/core/mat.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/image_probe.h"
#include "core/model_spec.h"
#include "kennel/v1/model.pb.h"

namespace kennel::core {

// Decodes to 8-bit RGB (channels 3) or grayscale (channels 1), whatever the stored colour
// type (gray, alpha, 16-bit, palette, CMYK are converted). Limits are enforced from the
// header first. When min_shorter_side > 0 and the image is at least twice that on its
// shorter side, JPEGs are decoded at 1/2, 1/4 or 1/8 scale (never below min_shorter_side),
// which is several times faster. INVALID_ARGUMENT on any bad input, including truncation.
absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, int channels,
                                    const DecodeLimits& limits = {}, int min_shorter_side = 0);

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

#endif  // KENNEL_CORE_ML_IMAGE_H_
