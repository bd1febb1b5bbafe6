// Dataset indexing (no OpenCV, no torch). Two layouts:
//  - the dogImages folder layout: <root>/{train,valid,test}/NNN.Breed_Name/*.jpg, classes
//    ordered by their numeric prefix and named "Breed Name";
//  - IDX files (MNIST / Fashion-MNIST), gzipped or not, as Debian's dataset-fashion-mnist
//    installs them in /usr/share/datasets/fashion-mnist.
// Both produce a kennel.v1.DatasetIndex; core/ml/dataset.h serves its samples decoded.
#ifndef KENNEL_CORE_DATASET_INDEX_H_
#define KENNEL_CORE_DATASET_INDEX_H_

#include <cstdint>
#include <string>

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

// The images of one IDX file of unsigned bytes [count, rows, cols] (gzipped or not), read
// whole into memory. Immutable after Read, so thread-safe.
class IdxImages {
 public:
  // INVALID_ARGUMENT when the file is not a 3-dimensional IDX file of unsigned bytes or its
  // size disagrees with its header; NOT_FOUND when it cannot be opened.
  static absl::StatusOr<IdxImages> Read(const std::string& path);

  int64_t count() const { return count_; }
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  // Image i's rows x cols bytes, row-major. Requires 0 <= i < count().
  const uint8_t* image(int64_t i) const {
    return reinterpret_cast<const uint8_t*>(data_.data() + offset_) + i * rows_ * cols_;
  }

 private:
  int64_t count_ = 0;
  int rows_ = 0, cols_ = 0;
  size_t offset_ = 0;
  std::string data_;  // The whole file; images start at offset_.
};

}  // namespace kennel::core

#endif  // KENNEL_CORE_DATASET_INDEX_H_
