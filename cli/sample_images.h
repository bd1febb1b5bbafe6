// Images kennelctl sends when the user names none: Fashion-MNIST's test split from Debian's
// dataset-fashion-mnist, encoded as PNG files the way a client would send them (libpng; no
// OpenCV in kennelctl).
#ifndef KENNEL_CLI_SAMPLE_IMAGES_H_
#define KENNEL_CLI_SAMPLE_IMAGES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kennel::cli {

// An 8-bit grayscale image (rows x cols bytes, row-major) as a PNG file's bytes.
absl::StatusOr<std::string> EncodeGrayPng(const uint8_t* pixels, int rows, int cols);

// PNG encodings of the first `limit` Fashion-MNIST test images (0: all) and their labels.
absl::Status LoadFashionMnistPngs(int64_t limit, std::vector<std::string>* images, std::vector<int>* labels);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_SAMPLE_IMAGES_H_
