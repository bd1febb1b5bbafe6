// Dataset indexing and reading. Two layouts:
//  - the dogImages folder layout: <root>/{train,valid,test}/NNN.Breed_Name/*.jpg, classes
//    ordered by their numeric prefix and named "Breed Name";
//  - IDX files (MNIST / Fashion-MNIST), gzipped or not, as Debian's dataset-fashion-mnist
//    installs them in /usr/share/datasets/fashion-mnist.
// Both produce a kennel.v1.DatasetIndex; a DatasetReader serves its samples from a root.
#ifndef KENNEL_CORE_DATASET_H_
#define KENNEL_CORE_DATASET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "absl/status/statusor.h"
#include "kennel/v1/dataset.pb.h"

namespace kennel::core {

inline constexpr char kDebianFashionMnistRoot[] = "/usr/share/datasets/fashion-mnist";

// Indexes split "train", "valid" or "test" of a dogImages-style folder. The class list is
// the union of the class folders of all splits present, so every split gets the same labels.
// Files that are not JPEG/PNG or whose header cannot be read are skipped and counted.
absl::StatusOr<kennel::v1::DatasetIndex> IndexImageFolder(const std::string& root,
                                                          const std::string& split);

// Indexes split "train" (train-*) or "test" (t10k-*) of IDX files in `root`.
absl::StatusOr<kennel::v1::DatasetIndex> IndexFashionMnist(const std::string& root,
                                                           const std::string& split);

// True for .jpg, .jpeg and .png (any case): the files Kennel reads as images.
bool HasImageExtension(const std::string& path);

// Sets index.fingerprint from its contents.
void Fingerprint(kennel::v1::DatasetIndex& index);

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
  struct IdxFile;
  DatasetReader(kennel::v1::DatasetIndex index, std::string root);

  kennel::v1::DatasetIndex index_;
  std::string root_;
  std::vector<std::unique_ptr<IdxFile>> idx_files_;
  // For IDX samples: (file number, image number) per sample.
  std::vector<std::pair<int32_t, int32_t>> idx_refs_;
};

}  // namespace kennel::core

#endif  // KENNEL_CORE_DATASET_H_
