#include "core/file_type.h"

#include <gtest/gtest.h>

#include <string>

namespace kennel::core {
namespace {

std::string ZipWithFirstEntry(const std::string& name) {
  std::string head = "PK\x03\x04";
  head += std::string(22, '\0');
  head += static_cast<char>(name.size());
  head += '\0';
  head += std::string(2, '\0');
  return head + name;
}

TEST(FileTypeTest, RecognisesWhatUsersHandKennelInsteadOfWeights) {
  EXPECT_EQ(DetectFileType(""), FileType::kEmpty);
  EXPECT_EQ(DetectFileType(ZipWithFirstEntry("resnet18/data.pkl")), FileType::kTorchZip);
  EXPECT_EQ(DetectFileType(ZipWithFirstEntry("model/constants.pkl")), FileType::kTorchScript);
  EXPECT_EQ(DetectFileType(ZipWithFirstEntry("torchscript/data/0")), FileType::kTorchScript);
  // A frozen module has no data/ tensors: data.pkl first, then its code.
  EXPECT_EQ(DetectFileType(ZipWithFirstEntry("frozen/data.pkl") + "...PK\x03\x04...frozen/code/__torch__/m.py"),
            FileType::kTorchScript);
  EXPECT_EQ(DetectFileType(ZipWithFirstEntry("arr_0.npy")), FileType::kZip);
  EXPECT_EQ(DetectFileType(ZipWithFirstEntry("model/data/aotinductor/model/c1.wrapper.cpp")), FileType::kAotiPackage);
  EXPECT_EQ(DetectFileType(std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15)),
            FileType::kTorchLegacy);
  EXPECT_EQ(DetectFileType(std::string("\x80\x04\x95\x10", 4)), FileType::kPickle);
  std::string safetensors("\x10\0\0\0\0\0\0\0{\"a\":1}        ", 24);
  EXPECT_EQ(DetectFileType(safetensors), FileType::kSafetensors);
  // A 640-byte header's length starts like a protocol-2 pickle.
  std::string long_header("\x80\x02\0\0\0\0\0\0{\"a\"", 12);
  EXPECT_EQ(DetectFileType(long_header), FileType::kSafetensors);
  EXPECT_EQ(DetectFileType("\x93NUMPY\x01\x00"), FileType::kNumpy);
  EXPECT_EQ(DetectFileType("\x89HDF\r\n\x1a\n"), FileType::kHdf5);
  EXPECT_EQ(DetectFileType("\xFF\xD8\xFF\xE0"), FileType::kJpeg);
  EXPECT_EQ(DetectFileType("\x89PNG\r\n\x1a\n"), FileType::kPng);
  EXPECT_EQ(DetectFileType("\x1f\x8b\x08"), FileType::kGzip);
  EXPECT_EQ(DetectFileType("{\"architecture\": \"resnet50\"}"), FileType::kJson);
  EXPECT_EQ(DetectFileType("just some notes\n"), FileType::kText);
  EXPECT_EQ(DetectFileType(std::string("\x08\x07\x12\x07pytorch", 11)), FileType::kOnnx);
  EXPECT_EQ(DetectFileType(std::string("\x01\x02\x03\x00", 4)), FileType::kUnknown);
  EXPECT_NE(DescribeFileType(FileType::kTorchScript).find("TorchScript"), std::string::npos);
  EXPECT_NE(DescribeFileType(FileType::kJpeg).find("JPEG"), std::string::npos);
}

}  // namespace
}  // namespace kennel::core
