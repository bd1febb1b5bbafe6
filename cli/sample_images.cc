#include "cli/sample_images.h"

#include <png.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/dataset_index.h"
#include "core/status_macros.h"

namespace kennel::cli {

absl::StatusOr<std::string> EncodeGrayPng(const uint8_t* pixels, int rows, int cols) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(cols);
  image.height = static_cast<png_uint_32>(rows);
  image.format = PNG_FORMAT_GRAY;
  // First call sizes the output, second writes it.
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, pixels, 0, nullptr)) {
    return absl::InternalError(absl::StrCat("PNG encoding failed: ", image.message));
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, pixels, 0, nullptr)) {
    return absl::InternalError(absl::StrCat("PNG encoding failed: ", image.message));
  }
  out.resize(size);
  return out;
}

absl::Status LoadFashionMnistPngs(int64_t limit, std::vector<std::string>* images, std::vector<int>* labels) {
  ASSIGN_OR_RETURN(auto index, core::IndexFashionMnist(core::kDebianFashionMnistRoot, "test"));
  // Every test sample lives in one file: "<file>#<n>".
  const std::string& first = index.samples(0).location();
  const std::string file = first.substr(0, first.rfind('#'));
  ASSIGN_OR_RETURN(auto pixels,
                   core::IdxImages::Read((std::filesystem::path(core::kDebianFashionMnistRoot) / file).string()));
  const int64_t n = limit > 0 ? std::min<int64_t>(limit, pixels.count()) : pixels.count();
  images->reserve(images->size() + static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(std::string png, EncodeGrayPng(pixels.image(i), pixels.rows(), pixels.cols()));
    images->push_back(std::move(png));
    labels->push_back(index.samples(static_cast<int>(i)).label());
  }
  return absl::OkStatus();
}

}  // namespace kennel::cli
