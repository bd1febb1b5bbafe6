#include "core/image_probe.h"

#include <algorithm>
#include <cstdint>
#include <string>

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

absl::Status CheckPixelLimits(const ImageInfo& info, const DecodeLimits& limits) {
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
  // Found by fuzz/image_probe_fuzzer: a frame header of 0x0 passed the probe (and dataset
  // indexing) and failed only when a trainer decoded it.
  if (layout.info.width <= 0 || layout.info.height <= 0) {
    return Invalid(absl::StrCat("image has no pixels (", layout.info.width, "x", layout.info.height, ")"));
  }
  return layout.info;
}

absl::StatusOr<ImageInfo> CheckDecodable(absl::string_view bytes, const DecodeLimits& limits) {
  if (static_cast<int64_t>(bytes.size()) > limits.max_encoded_bytes) {
    return Invalid(absl::StrCat("encoded image is ", bytes.size(), " bytes, over the limit of ",
                                limits.max_encoded_bytes));
  }
  ASSIGN_OR_RETURN(Header layout, Probe(bytes));
  RETURN_IF_ERROR(CheckPixelLimits(layout.info, limits));
  // Entropy-coded JPEG data never holds FF D9 except as the end marker, so its absence after
  // the scan header means the file was cut short. A PNG ends with an IEND chunk.
  if (layout.info.format == ImageFormat::kJpeg) {
    if (bytes.find("\xFF\xD9", layout.scan_start) == absl::string_view::npos) {
      return Invalid("truncated JPEG: no end-of-image marker");
    }
  } else if (bytes.rfind("IEND") == absl::string_view::npos) {
    return Invalid("truncated PNG: no IEND chunk");
  }
  return layout.info;
}

}  // namespace kennel::core
