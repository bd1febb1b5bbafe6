// Reading decoded samples of a dataset index (core/dataset_index.h) for training and
// evaluation: IDX images from memory, image files decoded with OpenCV.
#ifndef KENNEL_CORE_ML_DATASET_H_
#define KENNEL_CORE_ML_DATASET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "absl/status/statusor.h"
#include "core/dataset_index.h"
#include "kennel/v1/dataset.pb.h"

namespace kennel::core {

// Serves decoded samples of one index from a root folder. IDX files are read into memory at
// Create; image files are read on each Load. Thread-safe (Load is const and reentrant).
class DatasetReader {
 public:
  static absl::StatusOr<std::unique_ptr<DatasetReader>> Create(kennel::v1::DatasetIndex index,
                                                               std::string root);
  ~DatasetReader();

  int64_t size() const { return index_.samples_size(); }
  int32_t label(int64_t i) const { return index_.samples(static_cast<int>(i)).label(); }
  const kennel::v1::DatasetIndex& index() const { return index_; }

  // Sample i as an 8-bit image with `channels` channels (RGB order), decoded at reduced
  // scale where decode_hint allows (see DecodeImage). INVALID_ARGUMENT / NOT_FOUND naming
  // the file when it cannot be read.
  absl::StatusOr<cv::Mat> Load(int64_t i, int channels, int decode_hint = 0) const;

 private:
  DatasetReader(kennel::v1::DatasetIndex index, std::string root);

  kennel::v1::DatasetIndex index_;
  std::string root_;
  std::vector<IdxImages> idx_files_;
  // For IDX samples: (file number, image number) per sample.
  std::vector<std::pair<int32_t, int32_t>> idx_refs_;
};

}  // namespace kennel::core

#endif  // KENNEL_CORE_ML_DATASET_H_
