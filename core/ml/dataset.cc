#include "core/ml/dataset.h"

#include <charconv>
#include <filesystem>
#include <opencv2/imgproc.hpp>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/ml/image.h"
#include "core/status_macros.h"

namespace kennel::core {
namespace fs = std::filesystem;
using kennel::v1::DatasetIndex;

DatasetReader::DatasetReader(DatasetIndex index, std::string root)
    : index_(std::move(index)), root_(std::move(root)) {}
DatasetReader::~DatasetReader() = default;

absl::StatusOr<std::unique_ptr<DatasetReader>> DatasetReader::Create(DatasetIndex index,
                                                                     std::string root) {
  if (index.class_names_size() == 0) {
    return absl::InvalidArgumentError("dataset index has no classes");
  }
  for (const auto& s : index.samples()) {
    if (s.label() < 0 || s.label() >= index.class_names_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample ", s.location(), " has label ", s.label(), " out of range"));
    }
  }
  std::unique_ptr<DatasetReader> reader(new DatasetReader(std::move(index), std::move(root)));
  if (reader->index_.format() != DatasetIndex::IDX) return reader;

  std::unordered_map<std::string, int32_t> file_ids;
  reader->idx_refs_.reserve(static_cast<size_t>(reader->size()));
  for (const auto& s : reader->index_.samples()) {
    const size_t hash = s.location().rfind('#');
    int32_t n = -1;
    if (hash != std::string::npos) {
      std::from_chars(s.location().data() + hash + 1, s.location().data() + s.location().size(), n);
    }
    if (n < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("IDX sample location '", s.location(), "' is not <file>#<n>"));
    }
    const std::string file = s.location().substr(0, hash);
    auto [it, inserted] = file_ids.emplace(file, static_cast<int32_t>(reader->idx_files_.size()));
    if (inserted) {
      ASSIGN_OR_RETURN(IdxImages images, IdxImages::Read((fs::path(reader->root_) / file).string()));
      reader->idx_files_.push_back(std::move(images));
    }
    if (static_cast<uint32_t>(n) >= reader->idx_files_[static_cast<size_t>(it->second)].count()) {
      return absl::InvalidArgumentError(absl::StrCat("IDX sample ", s.location(), " is past the end of ", file));
    }
    reader->idx_refs_.emplace_back(it->second, n);
  }
  return reader;
}

absl::StatusOr<cv::Mat> DatasetReader::Load(int64_t i, int channels, int decode_hint) const {
  if (i < 0 || i >= size()) {
    return absl::OutOfRangeError(absl::StrCat("sample ", i, " of ", size()));
  }
  if (index_.format() == DatasetIndex::IDX) {
    const auto [file, n] = idx_refs_[static_cast<size_t>(i)];
    const IdxImages& images = idx_files_[static_cast<size_t>(file)];
    cv::Mat gray(images.rows(), images.cols(), CV_8UC1, const_cast<uint8_t*>(images.image(n)));
    if (channels == 1) return gray;  // Read-only view into the loaded file.
    cv::Mat rgb;
    cv::cvtColor(gray, rgb, cv::COLOR_GRAY2RGB);
    return rgb;
  }
  const std::string path = (fs::path(root_) / index_.samples(static_cast<int>(i)).location()).string();
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, int64_t{256} << 20));
  auto image = DecodeImage(bytes, channels, DecodeLimits{.max_encoded_bytes = int64_t{256} << 20},
                           decode_hint);
  if (!image.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", image.status().message()));
  }
  return image;
}

}  // namespace kennel::core
