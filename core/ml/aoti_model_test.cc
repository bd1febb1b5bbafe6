#include "core/ml/aoti_model.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "core/aoti_package.h"
#include "core/files.h"
#include "core/ml/artifact.h"
#include "core/ml/model_import.h"
#include "core/ml/weights.h"
#include "core/testing/logits.h"
#include "core/testing/paths.h"

namespace kennel::core {
namespace {
namespace fs = std::filesystem;
using testing::FixtureDir;
using testing::Torch2Fixture;

// The fixtures' packages (tests/fixtures/make_torch2_fixtures.py) imported with 7 classes at
// 3x32x32.
ModelImportOptions PackageOptions(const std::string& path, int classes = 7) {
  ModelImportOptions o;
  o.weights_path = path;
  o.name = "compiled";
  o.model.set_architecture(v1::AOTINDUCTOR);
  o.model.set_in_channels(3);
  for (int i = 0; i < classes; ++i) o.class_names.push_back("class " + std::to_string(i));
  o.preprocess.set_height(32);
  o.preprocess.set_width(32);
  o.preprocess.set_channels(3);
  o.output_dir = testing::NewTestOutputDir();
  return o;
}

AotiPackageInfo InfoOf(const std::string& path) {
  auto bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  auto info = ReadAotiPackageInfo(ZipReadFromBytes(*bytes), bytes->size(), path);
  EXPECT_TRUE(info.ok()) << info.status();
  return info.ok() ? *info : AotiPackageInfo{};
}

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::vector<std::string>& words) {
  EXPECT_EQ(s.code(), code) << s;
  for (const auto& w : words) EXPECT_NE(s.message().find(w), std::string::npos) << "'" << w << "' not in: " << s;
}

// Read without LibTorch, in any build: the package's device and the PyTorch that compiled it.
TEST(AotiPackageTest, MetadataIsReadBeforeAnyLoader) {
  const std::string path = Torch2Fixture("aoti_cnn.pt2");
  if (path.empty()) GTEST_SKIP() << "no PyTorch 2.x fixtures (configure KENNEL_PYTORCH2_PYTHON)";
  const AotiPackageInfo info = InfoOf(path);
  EXPECT_EQ(info.archive, "aoti_cnn");
  EXPECT_EQ(info.device, "cpu");
  EXPECT_EQ(info.torch_version.substr(0, 2), "2.") << info.torch_version;
  EXPECT_EQ(InfoOf(Torch2Fixture("aoti_cnn_old.pt2")).torch_version, "2.5.1");
  EXPECT_TRUE(InfoOf(Torch2Fixture("aoti_cnn_unversioned.pt2")).torch_version.empty());

  // Not a package: a TorchScript archive, a truncated package, bytes that are no zip.
  std::string truncated = *ReadFile(path);
  truncated.resize(truncated.size() / 2);
  for (const std::string& bytes : {*ReadFile(FixtureDir() + "/scripted_cnn.pt"), truncated, std::string("just words")}) {
    auto info = ReadAotiPackageInfo(ZipReadFromBytes(bytes), bytes.size(), "m.pt2");
    ExpectError(info.status(), absl::StatusCode::kInvalidArgument, {"m.pt2 is not an AOTInductor package"});
  }
}

TEST(AotiPackageTest, OnlyTheSameReleaseLoadsAPackage) {
  AotiPackageInfo info;
  info.torch_version = "2.11.0+cu130";
  EXPECT_TRUE(CheckAotiTorchVersion(info, "2.11.0", "m.pt2").ok());
  EXPECT_TRUE(CheckAotiTorchVersion(info, "2.11.0+cpu", "m.pt2").ok());
  ExpectError(CheckAotiTorchVersion(info, "2.10.1", "m.pt2"), absl::StatusCode::kFailedPrecondition,
              {"m.pt2", "compiled by PyTorch 2.11.0+cu130", "LibTorch 2.10.1", "compile it again with PyTorch 2.10.1"});
  info.torch_version.clear();
  ExpectError(CheckAotiTorchVersion(info, "2.11.0", "m.pt2"), absl::StatusCode::kInvalidArgument,
              {"does not record", "aot_inductor.metadata", "torch_version"});
}

// Debian's LibTorch 1.13 has no AOTInductor: importing a package says so, naming the version
// that compiled it and the build that serves it.
TEST(AotiPackageTest, ABuildWithoutAotInductorSaysSo) {
  if (HaveAotInductor()) GTEST_SKIP() << "this build has AOTInductor";
  const std::string path = Torch2Fixture("aoti_cnn.pt2");
  if (path.empty()) GTEST_SKIP() << "no PyTorch 2.x fixtures (configure KENNEL_PYTORCH2_PYTHON)";
  ExpectError(ImportModel(PackageOptions(path)).status(), absl::StatusCode::kFailedPrecondition,
              {"aoti_cnn.pt2 is an AOTInductor package", InfoOf(path).torch_version, "no AOTInductor",
               "PyTorch 2.x build"});
}

class AotiModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveAotInductor()) GTEST_SKIP() << "this build's LibTorch has no AOTInductor";
    if (Torch2Fixture("aoti_cnn.pt2").empty()) GTEST_SKIP() << "no PyTorch 2.x fixtures";
  }
};

// The imported package, loaded as an inference node loads it, gives PyTorch eager's logits (to
// core/testing/logits.h's bound) and probabilities within 1e-4.
TEST_F(AotiModelTest, AnImportedPackageGivesPyTorchsAnswers) {
  const ModelImportOptions o = PackageOptions(Torch2Fixture("aoti_cnn.pt2"));
  auto imported = ImportModel(o);
  ASSERT_TRUE(imported.ok()) << imported.status();
  const v1::ModelManifest& m = imported->manifest;
  EXPECT_EQ(m.model().architecture(), v1::AOTINDUCTOR);
  EXPECT_EQ(m.weights_file(), kAotiFile);
  EXPECT_EQ(m.scripted().compiled_with_torch(), InfoOf(o.weights_path).torch_version);
  EXPECT_EQ(m.scripted().checked_with_torch(), TORCH_VERSION);
  EXPECT_EQ(m.scripted().device(), "cpu");
  auto loaded = LoadArtifact(o.output_dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_NE(loaded->aoti, nullptr);
  EXPECT_EQ(loaded->model, nullptr);
  EXPECT_EQ(loaded->script, nullptr);
  auto io = ReadWeightsFile(FixtureDir() + "/aoti_cnn_io.pth");
  ASSERT_TRUE(io.ok()) << io.status();
  torch::NoGradGuard no_grad;
  const torch::Tensor ours = loaded->aoti->Run(io->at("input"));
  EXPECT_TRUE(testing::LogitsAgree(ours, io->at("logits")));
  EXPECT_LE((torch::softmax(ours, 1) - torch::softmax(io->at("logits"), 1)).abs().max().item<double>(), 1e-4);
  EXPECT_GT(io->at("logits").std().item<double>(), 1e-3);  // Not a comparison of constants.
}

TEST_F(AotiModelTest, WhatIsWrongIsSaidInOneLine) {
  // Compiled by another PyTorch: refused before the loader runs its code, naming both.
  ExpectError(ImportModel(PackageOptions(Torch2Fixture("aoti_cnn_old.pt2"))).status(),
              absl::StatusCode::kFailedPrecondition, {"compiled by PyTorch 2.5.1", TORCH_VERSION});
  ExpectError(ImportModel(PackageOptions(Torch2Fixture("aoti_cnn_unversioned.pt2"))).status(),
              absl::StatusCode::kInvalidArgument, {"does not record the PyTorch", "torch_version"});
  // Exported for a batch of one: the import's batch of two is refused.
  ExpectError(ImportModel(PackageOptions(Torch2Fixture("aoti_cnn_static.pt2"))).status(),
              absl::StatusCode::kInvalidArgument, {"refuses input [2, 3, 32, 32]", "dynamic batch"});
  // 7 outputs, 5 class names.
  ExpectError(ImportModel(PackageOptions(Torch2Fixture("aoti_cnn.pt2"), 5)).status(),
              absl::StatusCode::kInvalidArgument, {"[2, 7]", "5 class names", "[2, 5]"});
  // A TorchScript archive handed over as a package.
  ExpectError(ImportModel(PackageOptions(FixtureDir() + "/scripted_cnn.pt")).status(),
              absl::StatusCode::kInvalidArgument, {"not an AOTInductor package"});
  // Nothing is left behind by a refused import.
  EXPECT_FALSE(fs::exists(PackageOptions(Torch2Fixture("aoti_cnn.pt2")).output_dir));
}

// One compiled model run from four threads at once gives each the answer one thread gets.
TEST_F(AotiModelTest, ThreadsSharingOnePackageGetOneThreadsAnswers) {
  auto model = AotiModel::Load(Torch2Fixture("aoti_cnn.pt2"));
  ASSERT_TRUE(model.ok()) << model.status();
  torch::manual_seed(3);
  std::vector<torch::Tensor> inputs, alone;
  for (int i = 0; i < 4; ++i) {
    inputs.push_back(torch::rand({i + 1, 3, 32, 32}));
    alone.push_back((*model)->Run(inputs.back()));
  }
  std::vector<torch::Tensor> together(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) together[static_cast<size_t>(t)] = (*model)->Run(inputs[static_cast<size_t>(t)]);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < 4; ++i) EXPECT_TRUE(torch::equal(together[i], alone[i])) << "thread " << i;
}

}  // namespace
}  // namespace kennel::core
