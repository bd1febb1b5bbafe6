#include "core/member/artifact_transfer.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "core/files.h"
#include "core/status_macros.h"

namespace kennel::core {
namespace {

namespace fs = std::filesystem;

class ArtifactTransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::path(::testing::TempDir()) /
            ("transfer-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_ / "sent");
    ASSERT_TRUE(WriteFileSynced((base_ / "sent" / "manifest.json").string(), "{}").ok());
    ASSERT_TRUE(WriteFileSynced((base_ / "sent" / "weights").string(), std::string(3000, 'w')).ok());
  }
  void TearDown() override { fs::remove_all(base_); }

  // The chunks SendFolder streams for `files` of base_/sent.
  std::vector<v1::ArtifactChunk> Send(const std::vector<std::string>& files, absl::Status* status = nullptr) {
    std::vector<v1::ArtifactChunk> chunks;
    absl::Status s = SendFolder((base_ / "sent").string(), files, v1::ArtifactRef(),
                                [&](const v1::ArtifactChunk& c) {
                                  chunks.push_back(c);
                                  return true;
                                });
    if (status != nullptr) *status = s;
    return chunks;
  }

  // Receives `chunks` into base_/received with a limit; the status of the first failure.
  absl::Status Receive(const std::vector<v1::ArtifactChunk>& chunks, int64_t limit = 1 << 20) {
    FolderReceiver receiver((base_ / "received").string(), limit);
    for (const auto& c : chunks) RETURN_IF_ERROR(receiver.Consume(c));
    return receiver.Finish();
  }

  // What exists under base_ besides the sent folder: a refused transfer leaves nothing
  // outside the receiving folder, and the receiving folder holds no announced file.
  std::vector<std::string> Outside() {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(base_)) {
      const std::string rel = fs::relative(e.path(), base_).string();
      if (rel.rfind("sent", 0) != 0 && rel != "received") out.push_back(rel);
    }
    return out;
  }

  fs::path base_;
};

TEST_F(ArtifactTransferTest, AFolderArrivesWhole) {
  ASSERT_TRUE(Receive(Send({"manifest.json", "weights"})).ok());
  EXPECT_EQ(*ReadFile((base_ / "received" / "weights").string()), std::string(3000, 'w'));
  EXPECT_EQ(*ReadFile((base_ / "received" / "manifest.json").string()), "{}");
}

TEST_F(ArtifactTransferTest, NamesThatLeaveTheFolderAreRefusedWithNothingWritten) {
  for (const std::string& name : std::vector<std::string>{"../escape", "a/b", "/etc/passwd", ".", "..", "", std::string("a\0b", 3),
                                 std::string(256, 'n')}) {
    auto chunks = Send({"weights"});
    chunks[0].mutable_header()->mutable_files(0)->set_name(name);
    const absl::Status status = Receive(chunks);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << name << ": " << status;
    EXPECT_TRUE(Outside().empty()) << name;
    EXPECT_FALSE(fs::exists(base_ / "received")) << name;
  }
}

TEST_F(ArtifactTransferTest, ATransferOverTheLimitIsRefusedBeforeAnyByteIsWritten) {
  auto chunks = Send({"manifest.json", "weights"});
  absl::Status status = Receive(chunks, /*limit=*/1000);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("limit of 1000 bytes"), std::string::npos) << status;
  EXPECT_FALSE(fs::exists(base_ / "received"));
  // Announced sizes whose sum overflows 64 bits do not wrap around under the limit.
  chunks = Send({"manifest.json", "weights"});
  chunks[0].mutable_header()->mutable_files(0)->set_size(int64_t{1} << 62);
  chunks[0].mutable_header()->mutable_files(1)->set_size(int64_t{1} << 62);
  auto* third = chunks[0].mutable_header()->add_files();
  third->set_name("more");
  third->set_size(int64_t{1} << 62);
  auto* fourth = chunks[0].mutable_header()->add_files();
  fourth->set_name("more2");
  fourth->set_size(int64_t{1} << 62);
  status = Receive(chunks, /*limit=*/int64_t{1} << 40);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_FALSE(fs::exists(base_ / "received"));
}

TEST_F(ArtifactTransferTest, AFileAnnouncedTwiceOrCorruptOrLongerIsRefused) {
  auto twice = Send({"weights", "weights"});
  EXPECT_EQ(Receive(twice).code(), absl::StatusCode::kInvalidArgument);
  fs::remove_all(base_ / "received");

  auto corrupt = Send({"weights"});
  std::string* data = corrupt.back().mutable_data();
  (*data)[10] ^= 1;
  EXPECT_EQ(Receive(corrupt).code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(fs::exists(base_ / "received" / "weights"));
  fs::remove_all(base_ / "received");

  auto longer = Send({"weights"});
  longer.back().mutable_data()->append("extra");
  EXPECT_EQ(Receive(longer).code(), absl::StatusCode::kInvalidArgument);
  fs::remove_all(base_ / "received");

  auto shorter = Send({"weights"});
  shorter.pop_back();
  EXPECT_EQ(Receive(shorter).code(), absl::StatusCode::kDataLoss);
}

TEST_F(ArtifactTransferTest, ASymbolicLinkInTheSentFolderIsNotFollowed) {
  ASSERT_TRUE(WriteFileSynced((base_ / "secret").string(), "not for peers").ok());
  fs::create_symlink(base_ / "secret", base_ / "sent" / "linked");
  absl::Status status;
  const auto chunks = Send({"manifest.json", "linked"}, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("symbolic link"), std::string::npos) << status;
  EXPECT_TRUE(chunks.empty());  // Refused before the header went out.
  ASSERT_EQ(::mkfifo((base_ / "sent" / "fifo").c_str(), 0600), 0);
  Send({"fifo"}, &status);  // (A FIFO would block a plain read forever.)
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST_F(ArtifactTransferTest, AReceivedFileNeverReplacesOneAlreadyThere) {
  // The receiving folder must be new; a link planted where it will be is refused.
  fs::create_symlink(base_ / "sent", base_ / "received");
  EXPECT_FALSE(Receive(Send({"weights"})).ok());
  EXPECT_EQ(*ReadFile((base_ / "sent" / "weights").string()), std::string(3000, 'w'));
  EXPECT_EQ(WriteFileSynced((base_ / "sent" / "weights").string(), "x").code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace kennel::core
