#include "core/ml/artifact.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "core/files.h"

namespace kennel::core {
namespace {
namespace fs = std::filesystem;

v1::ModelManifest SmallManifest() {
  v1::ModelManifest m;
  m.set_name("fashion");
  m.set_version(3);
  m.mutable_model()->set_architecture(v1::SMALL_CNN);
  m.mutable_model()->set_num_classes(3);
  m.mutable_model()->set_in_channels(1);
  for (const char* c : {"a", "b", "c"}) m.add_class_names(c);
  m.mutable_preprocess()->set_height(28);
  m.mutable_preprocess()->set_width(28);
  m.mutable_preprocess()->set_channels(1);
  m.mutable_preprocess()->add_mean(0.286f);
  m.mutable_preprocess()->add_std(0.353f);
  m.mutable_metrics()->set_test_accuracy(0.91);
  m.mutable_lineage()->set_job_id("job-7");
  return m;
}

class ArtifactTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::path(::testing::TempDir()) /
            ::testing::UnitTest::GetInstance()->current_test_info()->name()).string();
    fs::remove_all(dir_);
    model_ = *CreateModel(SmallManifest().model());
    ASSERT_TRUE(WriteArtifact(dir_, SmallManifest(), *model_).ok());
  }
  void Corrupt(const std::string& file, std::function<void(std::string&)> edit) {
    const std::string path = dir_ + "/" + file;
    std::string bytes = *ReadFile(path);
    edit(bytes);
    ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
  }
  std::string dir_;
  std::shared_ptr<Classifier> model_;
};

TEST_F(ArtifactTest, RoundTripGivesTheSameModelAndManifest) {
  auto loaded = LoadArtifact(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->manifest.name(), "fashion");
  EXPECT_EQ(loaded->manifest.version(), 3);
  EXPECT_EQ(loaded->manifest.class_names(2), "c");
  EXPECT_FLOAT_EQ(loaded->manifest.preprocess().std(0), 0.353f);
  EXPECT_EQ(loaded->manifest.lineage().job_id(), "job-7");
  EXPECT_EQ(loaded->manifest.weights_sha256().size(), 64u);
  EXPECT_FALSE(loaded->model->is_training());
  model_->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({4, 1, 28, 28});
  EXPECT_TRUE(torch::equal(model_->forward(x), loaded->model->forward(x)));
  // Human-readable manifest with snake_case keys.
  EXPECT_NE(ReadFile(dir_ + "/manifest.json")->find("\"class_names\""), std::string::npos);
}

TEST_F(ArtifactTest, ExistingVersionIsNeverOverwritten) {
  auto status = WriteArtifact(dir_, SmallManifest(), *model_);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(LoadArtifact(dir_).ok());
}

TEST_F(ArtifactTest, FlippedWeightByteIsDataLoss) {
  Corrupt(kWeightsFile, [](std::string& b) { b[b.size() - 3] ^= 0x40; });
  auto loaded = LoadArtifact(dir_);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("SHA-256"), std::string::npos);
}

TEST_F(ArtifactTest, TruncatedWeightsAreDataLoss) {
  Corrupt(kWeightsFile, [](std::string& b) { b.resize(b.size() / 2); });
  auto loaded = LoadArtifact(dir_);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("truncated"), std::string::npos);
}

TEST_F(ArtifactTest, CorruptManifestIsDataLoss) {
  Corrupt(kManifestFile, [](std::string& b) { b.resize(b.size() / 2); });
  EXPECT_EQ(LoadArtifact(dir_).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(ArtifactTest, ManifestThatContradictsItselfIsInvalid) {
  Corrupt(kManifestFile, [](std::string& b) {
    b.replace(b.find("\"c\""), 3, "\"c\", \"d\"");  // Four names for three classes.
  });
  auto loaded = LoadArtifact(dir_);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("4 class names"), std::string::npos) << loaded.status();
}

TEST_F(ArtifactTest, MissingArtifactIsNotFoundAndFailedWritesLeaveNothing) {
  EXPECT_EQ(LoadArtifact(dir_ + "-nope").status().code(), absl::StatusCode::kNotFound);
  v1::ModelManifest bad = SmallManifest();
  bad.mutable_model()->set_num_classes(0);
  EXPECT_FALSE(WriteArtifact(dir_ + "-bad", bad, *model_).ok());
  EXPECT_FALSE(fs::exists(dir_ + "-bad"));
  for (const auto& entry : fs::directory_iterator(fs::path(dir_).parent_path())) {
    EXPECT_EQ(entry.path().filename().string().find("staging"), std::string::npos);
  }
}

}  // namespace
}  // namespace kennel::core
