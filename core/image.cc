#include "core/image.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kennel::core {
namespace {

uint32_t Be16(absl::string_view b, size_t at) {
  return (uint32_t{static_cast<uint8_t>(b[at])} << 8) | static_cast<uint8_t>(b[at + 1]);
}
uint32_t Be32(absl::string_view b, size_t at) { return (Be16(b, at) << 16) | Be16(b, at + 2); }

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

struct Header {  // What the header says; scan_start only for JPEGs.
  ImageInfo info;
  size_t scan_start = 0;  // First byte after the SOS header.
};

absl::StatusOr<Header> ProbeJpeg(absl::string_view b) {
  Header out;
  out.info.format = ImageFormat::kJpeg;
  bool have_frame = false;
  size_t pos = 2;
  while (true) {
    while (pos < b.size() && static_cast<uint8_t>(b[pos]) != 0xFF) ++pos;  // Tolerate junk.
    while (pos < b.size() && static_cast<uint8_t>(b[pos]) == 0xFF) ++pos;  // Fill bytes.
    if (pos >= b.size()) return Invalid("truncated JPEG: the header ends before the image data");
    const uint8_t marker = static_cast<uint8_t>(b[pos++]);
    if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;
    if (marker == 0xD9) return Invalid("JPEG has no image data (end marker before any scan)");
    if (pos + 2 > b.size()) return Invalid("truncated JPEG header");
    const size_t len = Be16(b, pos);
    if (len < 2 || pos + len > b.size()) return Invalid("truncated JPEG header");
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 &&
                     marker != 0xCC;
    if (sof) {
      if (len < 8) return Invalid("malformed JPEG frame header");
      out.info.bit_depth = static_cast<uint8_t>(b[pos + 2]);
      out.info.height = static_cast<int>(Be16(b, pos + 3));
      out.info.width = static_cast<int>(Be16(b, pos + 5));
      out.info.channels = static_cast<uint8_t>(b[pos + 7]);
      have_frame = true;
    }
    if (marker == 0xDA) {
      if (!have_frame) return Invalid("malformed JPEG: scan before frame header");
      out.scan_start = pos + len;
      return out;
    }
    pos += len;
  }
}

absl::StatusOr<ImageInfo> ProbePng(absl::string_view b) {
  // 8-byte signature, then the IHDR chunk: length, "IHDR", width, height, depth, colour type.
  if (b.size() < 8 + 8 + 13) return Invalid("truncated PNG header");
  if (b.substr(12, 4) != "IHDR") return Invalid("malformed PNG: first chunk is not IHDR");
  ImageInfo info;
  info.format = ImageFormat::kPng;
  const uint32_t w = Be32(b, 16), h = Be32(b, 20);
  info.width = static_cast<int>(std::min<uint32_t>(w, 1u << 30));
  info.height = static_cast<int>(std::min<uint32_t>(h, 1u << 30));
  info.bit_depth = static_cast<uint8_t>(b[24]);
  switch (static_cast<uint8_t>(b[25])) {
    case 0: info.channels = 1; break;
    case 2: info.channels = 3; break;
    case 3: info.channels = 3; break;  // Palette.
    case 4: info.channels = 2; break;
    case 6: info.channels = 4; break;
    default: return Invalid("malformed PNG: unknown colour type");
  }
  return info;
}

absl::Status CheckLimits(const ImageInfo& info, const DecodeLimits& limits) {
  if (info.width <= 0 || info.height <= 0) {
    return Invalid(absl::StrCat("image has no pixels (", info.width, "x", info.height, ")"));
  }
  if (info.width > limits.max_side || info.height > limits.max_side ||
      int64_t{info.width} * info.height > limits.max_pixels) {
    return Invalid(absl::StrCat("image is ", info.width, "x", info.height,
                                ", over the limit of ", limits.max_pixels, " pixels / ",
                                limits.max_side, " per side"));
  }
  return absl::OkStatus();
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

// The header of either format; for JPEGs also where the scan data starts.
absl::StatusOr<Header> Probe(absl::string_view bytes) {
  if (bytes.empty()) return Invalid("empty image: no bytes");
  if (bytes.size() >= 3 && bytes.substr(0, 2) == "\xFF\xD8") return ProbeJpeg(bytes);
  if (bytes.size() >= 8 && bytes.substr(0, 8) == "\x89PNG\r\n\x1A\n") {
    ASSIGN_OR_RETURN(ImageInfo info, ProbePng(bytes));
    return Header{info, 0};
  }
  return Invalid("not a JPEG or PNG image (unrecognised leading bytes)");
}

}  // namespace

absl::StatusOr<ImageInfo> ProbeImage(absl::string_view bytes) {
  ASSIGN_OR_RETURN(Header layout, Probe(bytes));
  return layout.info;
}

absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, int channels,
                                    const DecodeLimits& limits, int min_shorter_side) {
  if (channels != 1 && channels != 3) {
    return Invalid(absl::StrCat("channels must be 1 or 3, got ", channels));
  }
  if (static_cast<int64_t>(bytes.size()) > limits.max_encoded_bytes) {
    return Invalid(absl::StrCat("encoded image is ", bytes.size(), " bytes, over the limit of ",
                                limits.max_encoded_bytes));
  }
  ASSIGN_OR_RETURN(Header layout, Probe(bytes));
  const ImageInfo& info = layout.info;
  RETURN_IF_ERROR(CheckLimits(info, limits));
  // Entropy-coded JPEG data never holds FF D9 except as the end marker, so its absence after
  // the scan header means the file was cut short. A PNG ends with an IEND chunk.
  if (info.format == ImageFormat::kJpeg) {
    if (bytes.find("\xFF\xD9", layout.scan_start) == absl::string_view::npos) {
      return Invalid("truncated JPEG: no end-of-image marker");
    }
  } else if (bytes.rfind("IEND") == absl::string_view::npos) {
    return Invalid("truncated PNG: no IEND chunk");
  }
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

absl::StatusOr<kennel::v1::PreprocessSpec> NormalizePreprocessSpec(
    kennel::v1::PreprocessSpec spec) {
  if (spec.channels() == 0) spec.set_channels(3);
  if (spec.channels() != 1 && spec.channels() != 3) {
    return Invalid(absl::StrCat("preprocess channels must be 1 or 3, got ", spec.channels()));
  }
  if (spec.height() < 1 || spec.width() < 1 || spec.height() > 4096 || spec.width() > 4096) {
    return Invalid(absl::StrCat("preprocess size must be in [1, 4096], got ", spec.height(), "x",
                                spec.width()));
  }
  if (spec.resize_shorter() != 0 &&
      spec.resize_shorter() < std::max(spec.height(), spec.width())) {
    return Invalid(absl::StrCat("resize_shorter (", spec.resize_shorter(),
                                ") is smaller than the crop ", spec.height(), "x", spec.width()));
  }
  if (spec.interpolation() == kennel::v1::INTERPOLATION_UNSPECIFIED) {
    spec.set_interpolation(kennel::v1::BILINEAR);
  }
  if (spec.mean().empty()) spec.mutable_mean()->Resize(spec.channels(), 0.0f);
  if (spec.std().empty()) spec.mutable_std()->Resize(spec.channels(), 1.0f);
  if (spec.mean_size() != spec.channels() || spec.std_size() != spec.channels()) {
    return Invalid(absl::StrCat("preprocess mean and std need ", spec.channels(), " values each"));
  }
  for (float s : spec.std()) {
    if (!(s > 0)) return Invalid("preprocess std values must be positive");
  }
  return spec;
}

int64_t PreprocessedSize(const kennel::v1::PreprocessSpec& spec) {
  return int64_t{spec.channels()} * spec.height() * spec.width();
}

int DecodeHint(const kennel::v1::PreprocessSpec& spec) {
  return spec.resize_shorter() > 0 ? spec.resize_shorter()
                                   : std::max(spec.height(), spec.width());
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
