#include "core/ml/dataset.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <opencv2/imgcodecs.hpp>

#include "core/files.h"

namespace kennel::core {
namespace {
namespace fs = std::filesystem;

void WriteJpeg(const fs::path& path, int value) {
  fs::create_directories(path.parent_path());
  cv::imwrite(path.string(), cv::Mat(24, 32, CV_8UC3, cv::Scalar(value, value, value)));
}

// A small folder in the dogImages layout. Folder "10.Zebra_dog" must sort after "2.Beagle"
// (numeric order), though it sorts first as text.
class ImageFolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // ctest runs tests in parallel processes: each gets its own folder.
    root_ = fs::path(::testing::TempDir()) /
            ::testing::UnitTest::GetInstance()->current_test_info()->name() / "dogImages";
    fs::remove_all(root_);
    WriteJpeg(root_ / "train/001.Affenpinscher/a1.jpg", 10);
    WriteJpeg(root_ / "train/001.Affenpinscher/a2.JPG", 20);
    WriteJpeg(root_ / "train/2.Beagle/b1.jpg", 30);
    WriteJpeg(root_ / "train/10.Zebra_dog/z1.jpg", 40);
    ASSERT_TRUE(WriteFileAtomic((root_ / "train/2.Beagle/notes.txt").string(), "hi").ok());
    ASSERT_TRUE(WriteFileAtomic((root_ / "train/2.Beagle/broken.jpg").string(), "garbage").ok());
    WriteJpeg(root_ / "valid/10.Zebra_dog/z9.jpg", 50);
  }
  fs::path root_;
};

TEST_F(ImageFolderTest, ClassesOrderedByNumberAndNamedWithoutPrefix) {
  auto index = IndexImageFolder(root_.string(), "train");
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->class_names_size(), 3);
  EXPECT_EQ(index->class_names(0), "Affenpinscher");
  EXPECT_EQ(index->class_names(1), "Beagle");
  EXPECT_EQ(index->class_names(2), "Zebra dog");
  ASSERT_EQ(index->samples_size(), 4);
  EXPECT_EQ(index->samples(0).location(), "train/001.Affenpinscher/a1.jpg");
  EXPECT_EQ(index->samples(2).label(), 1);
  EXPECT_EQ(index->samples(3).label(), 2);
  EXPECT_EQ(index->skipped(), 2);
  EXPECT_EQ(index->skipped_examples_size(), 2);
  EXPECT_EQ(index->format(), v1::DatasetIndex::IMAGE_FOLDER);
}

TEST_F(ImageFolderTest, EverySplitGetsTheSameClassList) {
  auto valid = IndexImageFolder(root_.string(), "valid");
  ASSERT_TRUE(valid.ok()) << valid.status();
  ASSERT_EQ(valid->class_names_size(), 3);
  ASSERT_EQ(valid->samples_size(), 1);
  EXPECT_EQ(valid->samples(0).label(), 2);
}

TEST_F(ImageFolderTest, FingerprintIsDeterministicAndContentSensitive) {
  auto a = IndexImageFolder(root_.string(), "train");
  auto b = IndexImageFolder(root_.string(), "train");
  EXPECT_EQ(a->fingerprint(), b->fingerprint());
  EXPECT_EQ(a->fingerprint().size(), 64u);
  WriteJpeg(root_ / "train/2.Beagle/b2.jpg", 60);
  EXPECT_NE(IndexImageFolder(root_.string(), "train")->fingerprint(), a->fingerprint());
}

TEST_F(ImageFolderTest, ReaderDecodesFromItsOwnRoot) {
  auto index = *IndexImageFolder(root_.string(), "train");
  // A second machine's copy of the data at another path.
  const fs::path copy = root_.parent_path() / "copy_of_dogs";
  fs::remove_all(copy);
  fs::copy(root_, copy, fs::copy_options::recursive);
  auto reader = DatasetReader::Create(index, copy.string());
  ASSERT_TRUE(reader.ok());
  auto img = (*reader)->Load(2, 3);
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(img->cols, 32);
  EXPECT_NEAR(img->at<cv::Vec3b>(5, 5)[0], 30, 2);
  EXPECT_EQ((*reader)->label(2), 1);
  fs::remove(copy / index.samples(0).location());
  auto missing = (*reader)->Load(0, 3);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*reader)->Load(99, 3).status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(ImageFolderTest, MissingSplitIsNotFound) {
  auto index = IndexImageFolder(root_.string(), "test");
  EXPECT_EQ(index.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(index.status().message().find("test"), std::string::npos);
}

TEST(FashionMnistTest, DebianTestSplitHasKnownLabelsAndPixels) {
  auto index = IndexFashionMnist(kDebianFashionMnistRoot, "test");
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->samples_size(), 10000);
  EXPECT_EQ(index->class_names(9), "Ankle boot");
  const int first_labels[] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(index->samples(i).label(), first_labels[i]) << i;
  auto reader = DatasetReader::Create(*index, kDebianFashionMnistRoot);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto first = (*reader)->Load(0, 1);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->rows, 28);
  EXPECT_EQ(cv::sum(*first)[0], 33456);  // Reference values computed with numpy.
  EXPECT_EQ(first->at<uint8_t>(14, 14), 110);
  EXPECT_EQ(cv::sum(*(*reader)->Load(9999, 1))[0], 24390);
  auto rgb = (*reader)->Load(0, 3);
  EXPECT_EQ(rgb->channels(), 3);
}

TEST(FashionMnistTest, TrainSplitHas60000Samples) {
  auto index = IndexFashionMnist(kDebianFashionMnistRoot, "train");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->samples_size(), 60000);
  EXPECT_EQ(IndexFashionMnist(kDebianFashionMnistRoot, "valid").status().code(),
            absl::StatusCode::kInvalidArgument);
}

std::string Idx(std::vector<uint32_t> dims, const std::string& payload) {
  std::string out = {0, 0, 8, static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int b = 3; b >= 0; --b) out.push_back(static_cast<char>((d >> (8 * b)) & 0xff));
  }
  return out + payload;
}

TEST(FashionMnistTest, UncompressedAndMalformedIdxFiles) {
  const fs::path dir = fs::path(::testing::TempDir()) / "idx";
  fs::remove_all(dir);
  fs::create_directories(dir);
  ASSERT_TRUE(WriteFileAtomic((dir / "t10k-images-idx3-ubyte").string(),
                              Idx({2, 2, 2}, std::string("\1\2\3\4\5\6\7\10", 8))).ok());
  ASSERT_TRUE(WriteFileAtomic((dir / "t10k-labels-idx1-ubyte").string(), Idx({2}, "\3\4")).ok());
  auto index = IndexFashionMnist(dir.string(), "test");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->samples(1).label(), 4);
  auto reader = DatasetReader::Create(*index, dir.string());
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->Load(1, 1)->at<uint8_t>(1, 1), 8);

  ASSERT_TRUE(WriteFileAtomic((dir / "t10k-labels-idx1-ubyte").string(), Idx({3}, "\3\4\5")).ok());
  EXPECT_EQ(IndexFashionMnist(dir.string(), "test").status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(WriteFileAtomic((dir / "t10k-labels-idx1-ubyte").string(), "nonsense").ok());
  EXPECT_EQ(IndexFashionMnist(dir.string(), "test").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IndexFashionMnist("/nonexistent", "test").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kennel::core
