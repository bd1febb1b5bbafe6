#include "core/ml/image.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <csetjmp>
#include <cstdio>
#include <memory>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

#ifdef KENNEL_HAVE_LIBJPEG
#include <jpeglib.h>
#endif

namespace kennel::core {
namespace {

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

int CvInterpolation(kennel::v1::Interpolation interpolation) {
  switch (interpolation) {
    case kennel::v1::NEAREST: return cv::INTER_NEAREST;
    case kennel::v1::AREA: return cv::INTER_AREA;
    case kennel::v1::BICUBIC: return cv::INTER_CUBIC;
    default: return cv::INTER_LINEAR;
  }
}

// Matches `image` to the spec's channel count (RGB order kept).
absl::StatusOr<cv::Mat> MatchChannels(const cv::Mat& image, int channels) {
  if (image.empty()) return Invalid("empty image");
  if (image.depth() != CV_8U) return Invalid("image must be 8-bit");
  if (image.channels() == channels) return image;
  cv::Mat out;
  if (image.channels() == 1 && channels == 3) {
    cv::cvtColor(image, out, cv::COLOR_GRAY2RGB);
  } else if (image.channels() == 3 && channels == 1) {
    cv::cvtColor(image, out, cv::COLOR_RGB2GRAY);
  } else {
    return Invalid(absl::StrCat("cannot convert a ", image.channels(), "-channel image to ",
                                channels, " channels"));
  }
  return out;
}

// Resized (if needed) `image` -> normalised CHW floats.
void ToChw(const cv::Mat& image, const kennel::v1::PreprocessSpec& spec, float* out) {
  const int c = spec.channels(), h = spec.height(), w = spec.width();
  float scale[4], bias[4];
  for (int k = 0; k < c; ++k) {
    scale[k] = 1.0f / (255.0f * spec.std(k));
    bias[k] = -spec.mean(k) / spec.std(k);
  }
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = image.ptr<uint8_t>(y);
    for (int k = 0; k < c; ++k) {
      float* dst = out + (static_cast<int64_t>(k) * h + y) * w;
      for (int x = 0; x < w; ++x) dst[x] = row[x * c + k] * scale[k] + bias[k];
    }
  }
}

cv::Mat ResizeTo(const cv::Mat& image, int width, int height, int interpolation) {
  if (image.cols == width && image.rows == height) return image;
  cv::Mat out;
  cv::resize(image, out, cv::Size(width, height), 0, 0, interpolation);
  return out;
}

#ifdef KENNEL_HAVE_LIBJPEG
struct JpegError {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
};

// A colour (YCbCr) or gray JPEG decoded straight to RGB or gray by libjpeg-turbo, scaled by
// 1/reduce. It is the decode OpenCV's imdecode runs (the same library; its defaults: islow
// DCT, fancy upsampling; the same scale), minus OpenCV's BGR order and the swap back to RGB
// after it: the same pixels, bit for bit (ImageTest compares them), ~2x less time beside the
// decode itself on a 500x375 photo. Empty for anything else (CMYK, a gray source asked for
// colour, any warning or error): the caller then goes through OpenCV, which decides as before.
cv::Mat DecodeJpegDirect(absl::string_view bytes, int channels, int reduce) {
  jpeg_decompress_struct info;
  JpegError error;
  info.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = [](j_common_ptr c) { std::longjmp(reinterpret_cast<JpegError*>(c->err)->jump, 1); };
  error.manager.output_message = [](j_common_ptr) {};  // Warnings are counted; OpenCV reports them.
  // Made before setjmp and not reassigned after it: its pointee survives a longjmp.
  const auto out = std::make_unique<cv::Mat>();
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&info);
    return cv::Mat();
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  const bool colour_source = info.num_components == 3 && info.jpeg_color_space == JCS_YCbCr;
  const bool gray_source = info.num_components == 1 && info.jpeg_color_space == JCS_GRAYSCALE;
  if (!(colour_source || (gray_source && channels == 1))) {
    jpeg_destroy_decompress(&info);
    return cv::Mat();
  }
  info.out_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
  info.scale_num = 1;
  info.scale_denom = static_cast<unsigned int>(reduce);
  jpeg_start_decompress(&info);
  out->create(static_cast<int>(info.output_height), static_cast<int>(info.output_width), channels == 3 ? CV_8UC3 : CV_8UC1);
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = out->ptr<uint8_t>(static_cast<int>(info.output_scanline));
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  const bool clean = error.manager.num_warnings == 0;
  jpeg_destroy_decompress(&info);
  return clean ? *out : cv::Mat();
}
#endif

}  // namespace

absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, int channels,
                                    const DecodeLimits& limits, int min_shorter_side) {
  if (channels != 1 && channels != 3) {
    return Invalid(absl::StrCat("channels must be 1 or 3, got ", channels));
  }
  ASSIGN_OR_RETURN(const ImageInfo info, CheckDecodable(bytes, limits));
  int reduce = 1;
  if (info.format == ImageFormat::kJpeg && min_shorter_side > 0) {
    const int shorter = std::min(info.width, info.height);
    while (reduce < 8 && shorter / (reduce * 2) >= min_shorter_side) reduce *= 2;
  }
  int flags = channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR;
  if (reduce == 2) flags = channels == 1 ? cv::IMREAD_REDUCED_GRAYSCALE_2 : cv::IMREAD_REDUCED_COLOR_2;
  if (reduce == 4) flags = channels == 1 ? cv::IMREAD_REDUCED_GRAYSCALE_4 : cv::IMREAD_REDUCED_COLOR_4;
  if (reduce == 8) flags = channels == 1 ? cv::IMREAD_REDUCED_GRAYSCALE_8 : cv::IMREAD_REDUCED_COLOR_8;
  cv::Mat decoded;
#ifdef KENNEL_HAVE_LIBJPEG
  if (info.format == ImageFormat::kJpeg) {
    decoded = DecodeJpegDirect(bytes, channels, reduce);
    if (!decoded.empty()) return decoded;
  }
#endif
  try {
    const cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8U,
                      const_cast<char*>(bytes.data()));
    decoded = cv::imdecode(buf, flags);
    if (!decoded.empty() && channels == 3) cv::cvtColor(decoded, decoded, cv::COLOR_BGR2RGB);
  } catch (const cv::Exception& e) {
    return Invalid(absl::StrCat("could not decode image: ", e.err));
  }
  if (decoded.empty()) {
    return Invalid(absl::StrCat("could not decode ", info.format == ImageFormat::kJpeg ? "JPEG" : "PNG",
                                " data (corrupt or unsupported)"));
  }
  return decoded;
}

absl::Status PreprocessInto(const cv::Mat& image, const kennel::v1::PreprocessSpec& spec,
                            float* out) {
  ASSIGN_OR_RETURN(cv::Mat img, MatchChannels(image, spec.channels()));
  const int interpolation = CvInterpolation(spec.interpolation());
  if (spec.resize_shorter() > 0) {
    // torchvision Resize(int): shorter side -> resize_shorter, aspect kept; then CenterCrop.
    const double scale = static_cast<double>(spec.resize_shorter()) / std::min(img.cols, img.rows);
    const int w = img.cols <= img.rows ? spec.resize_shorter()
                                       : static_cast<int>(img.cols * scale);
    const int h = img.rows < img.cols ? spec.resize_shorter()
                                      : static_cast<int>(img.rows * scale);
    img = ResizeTo(img, w, h, interpolation);
    const int top = static_cast<int>(std::lround((h - spec.height()) / 2.0));
    const int left = static_cast<int>(std::lround((w - spec.width()) / 2.0));
    img = img(cv::Rect(left, top, spec.width(), spec.height()));
  } else {
    img = ResizeTo(img, spec.width(), spec.height(), interpolation);
  }
  ToChw(img, spec, out);
  return absl::OkStatus();
}

absl::Status AugmentInto(const cv::Mat& image, const kennel::v1::PreprocessSpec& spec,
                         const Augmentation& aug, std::mt19937_64& rng, float* out) {
  ASSIGN_OR_RETURN(cv::Mat img, MatchChannels(image, spec.channels()));
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  if (aug.random_resized_crop) {
    // torchvision.transforms.RandomResizedCrop.get_params.
    const int width = img.cols, height = img.rows;
    const double area = static_cast<double>(width) * height;
    const double log_r0 = std::log(aug.min_ratio), log_r1 = std::log(aug.max_ratio);
    cv::Rect crop;
    for (int attempt = 0; attempt < 10 && crop.area() == 0; ++attempt) {
      const double target = area * (aug.min_scale + unit(rng) * (aug.max_scale - aug.min_scale));
      const double ratio = std::exp(log_r0 + unit(rng) * (log_r1 - log_r0));
      const int w = static_cast<int>(std::lround(std::sqrt(target * ratio)));
      const int h = static_cast<int>(std::lround(std::sqrt(target / ratio)));
      if (w > 0 && w <= width && h > 0 && h <= height) {
        const int top = std::uniform_int_distribution<int>(0, height - h)(rng);
        const int left = std::uniform_int_distribution<int>(0, width - w)(rng);
        crop = cv::Rect(left, top, w, h);
      }
    }
    if (crop.area() == 0) {  // Fallback: central crop within the ratio bounds.
      const double in_ratio = static_cast<double>(width) / height;
      int w = width, h = height;
      if (in_ratio < aug.min_ratio) {
        h = static_cast<int>(std::lround(w / aug.min_ratio));
      } else if (in_ratio > aug.max_ratio) {
        w = static_cast<int>(std::lround(h * aug.max_ratio));
      }
      crop = cv::Rect((width - w) / 2, (height - h) / 2, w, h);
    }
    img = ResizeTo(img(crop), spec.width(), spec.height(), CvInterpolation(spec.interpolation()));
  } else {
    RETURN_IF_ERROR(PreprocessInto(img, spec, out));
    if (aug.horizontal_flip && unit(rng) < 0.5) {
      const int c = spec.channels(), h = spec.height(), w = spec.width();
      for (int64_t row = 0; row < int64_t{c} * h; ++row) std::reverse(out + row * w, out + row * w + w);
    }
    return absl::OkStatus();
  }
  if (aug.horizontal_flip && unit(rng) < 0.5) {
    cv::Mat flipped;
    cv::flip(img, flipped, 1);
    img = flipped;
  }
  ToChw(img, spec, out);
  return absl::OkStatus();
}

}  // namespace kennel::core
