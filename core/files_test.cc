#include "core/files.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/grpc_status.h"

namespace kennel::core {
namespace {

TEST(FilesTest, AtomicWriteReplacesAndLeavesNoTempFiles) {
  const std::string dir = ::testing::TempDir() + "/files_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(WriteFileAtomic(dir + "/f", "one").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/f", "two").ok());
  EXPECT_EQ(*ReadFile(dir + "/f"), "two");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);
  EXPECT_EQ(ReadFile(dir + "/f", 2).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReadFile(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*ReadFilePrefix(dir + "/f", 2), "tw");
  EXPECT_FALSE(WriteFileAtomic(dir + "/no/such/dir/f", "x").ok());
}

TEST(FilesTest, Sha256MatchesKnownVector) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string path = ::testing::TempDir() + "/sha";
  ASSERT_TRUE(WriteFileAtomic(path, "abc").ok());
  EXPECT_EQ(*Sha256File(path), Sha256Hex("abc"));
}

TEST(GrpcStatusTest, CodesAndMessagesSurviveBothWays) {
  const absl::Status in = absl::InvalidArgumentError("image is 0x0");
  const grpc::Status g = ToGrpcStatus(in);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(g.error_message(), "image is 0x0");
  EXPECT_EQ(FromGrpcStatus(g), in);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "full")).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ToGrpcStatus(absl::DeadlineExceededError("late")).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

}  // namespace
}  // namespace kennel::core
