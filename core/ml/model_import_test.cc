#include "core/ml/model_import.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <torch/torch.h>

#include <filesystem>
#include <iostream>

#include "core/files.h"
#include "core/ml/artifact.h"
#include "core/ml/weights.h"
#include "core/testing/logits.h"
#include "core/testing/paths.h"

namespace kennel::core {
namespace {
namespace fs = std::filesystem;
using testing::FixtureDir;
using testing::LogitsAgree;

// ResNet-34 with 7 classes: an architecture and class count no other test uses, so the
// import is checked on a model whose layout the rest of the suite never exercised.
ModelImportOptions Resnet34Options(const std::string& weights_file) {
  ModelImportOptions o;
  o.weights_path = FixtureDir() + "/" + weights_file;
  o.name = "breeds7";
  o.model.set_architecture(v1::RESNET34);
  o.class_names = {"beagle", "boxer", "collie", "dalmatian", "husky", "poodle", "pug"};
  o.preprocess = DefaultPreprocess(v1::RESNET34);
  // With the pid: core_test.ParityWithoutAvx runs these tests too, at the same time.
  o.output_dir = testing::NewTestOutputDir() + "/artifact";
  return o;
}

// The imported artifact, loaded as an inference node loads it, computes torchvision's logits
// for the same inputs (to core/testing/logits.h's bound), so it serves torchvision's
// probabilities. (Logits, not probabilities: this model's are all but one-hot, where a wrong
// tensor could hide.) Returns ours.
torch::Tensor ExpectSameLogits(const ModelImportOptions& o, const std::string& reference) {
  auto result = ImportModel(o);
  EXPECT_TRUE(result.ok()) << result.status();
  auto loaded = LoadArtifact(o.output_dir);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  auto io = ParseSafetensors(*ReadFile(FixtureDir() + "/resnet34_7cls_io.safetensors"));
  EXPECT_TRUE(io.ok()) << io.status();
  if (!result.ok() || !loaded.ok() || !io.ok()) return {};
  torch::NoGradGuard no_grad;
  const torch::Tensor ours = loaded->model->forward(io->at("input"));
  const ::testing::AssertionResult agree = LogitsAgree(ours, io->at(reference));
  EXPECT_TRUE(agree) << reference;
  std::cout << reference << ": " << agree.message() << "\n";
  // Distinct inputs give distinct answers: the comparison is not between constants.
  EXPECT_GT(io->at(reference).std().item<double>(), 1e-3);
  return ours;
}

TEST(ModelImportTest, TorchvisionResnet34StateDictGivesTorchvisionsLogits) {
  const ModelImportOptions o = Resnet34Options("resnet34_7cls.pth");
  ExpectSameLogits(o, "logits");
  auto manifest = ReadManifest(o.output_dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->name(), "breeds7");
  EXPECT_EQ(manifest->model().architecture(), v1::RESNET34);
  EXPECT_EQ(manifest->model().num_classes(), 7);
  ASSERT_EQ(manifest->class_names_size(), 7);
  EXPECT_EQ(manifest->class_names(6), "pug");
  EXPECT_EQ(manifest->preprocess().height(), 224);
  EXPECT_EQ(manifest->preprocess().resize_shorter(), 256);
  EXPECT_FLOAT_EQ(manifest->preprocess().mean(0), 0.485f);
  EXPECT_TRUE(manifest->lineage().imported());
  EXPECT_EQ(manifest->lineage().source_sha256(), *Sha256File(o.weights_path));
}

TEST(ModelImportTest, Float16SafetensorsAreConvertedAndReported) {
  const ModelImportOptions o = Resnet34Options("resnet34_7cls_fp16.safetensors");
  auto result = ImportModel(o);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->conversions.size(), 1u);
  EXPECT_EQ(result->conversions[0].rfind("Half: ", 0), 0u) << result->conversions[0];
  fs::remove_all(o.output_dir);
  const torch::Tensor ours = ExpectSameLogits(o, "logits_fp16");
  // The weights were rounded to float16 (7e-4 of the logits' scale away from float32's): the
  // bound tells the two apart, so the check above would see a conversion that did not happen.
  auto io = ParseSafetensors(*ReadFile(FixtureDir() + "/resnet34_7cls_io.safetensors"));
  ASSERT_TRUE(io.ok() && ours.defined());
  const ::testing::AssertionResult fp32 = LogitsAgree(ours, io->at("logits"));
  EXPECT_FALSE(fp32);
  std::cout << "against float32's logits: " << fp32.message() << "\n";
}

TEST(ModelImportTest, WrongClassCountSaysWhatTheFileHolds) {
  ModelImportOptions o = Resnet34Options("resnet34_7cls.pth");
  o.class_names = {"a", "b", "c"};
  auto result = ImportModel(o);
  ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(result.status().message());
  EXPECT_NE(message.find("head has 7 outputs but 3 class names"), std::string::npos) << message;
  EXPECT_NE(message.find("fc.weight (file [7, 512], model [3, 512])"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(o.output_dir));
}

TEST(ModelImportTest, WrongArchitectureListsEveryMismatch) {
  ModelImportOptions o = Resnet34Options("resnet34_7cls.pth");
  o.model.set_architecture(v1::RESNET18);
  auto result = ImportModel(o);
  ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(result.status().message());
  // ResNet-34 has blocks layer1.2, layer2.2-3, layer3.2-5, layer4.2 that ResNet-18 lacks.
  for (const char* name : {"unexpected: ", "layer1.2.conv1.weight", "layer3.5.bn2.running_var", "layer4.2.conv2.weight"}) {
    EXPECT_NE(message.find(name), std::string::npos) << name << " in " << message;
  }
  EXPECT_FALSE(fs::exists(o.output_dir));
}

TEST(ModelImportTest, WrongHeadKindGetsAHint) {
  ModelImportOptions o = Resnet34Options("resnet34_7cls.pth");
  o.model.set_head(v1::MLP);
  auto result = ImportModel(o);
  ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("--head linear"), std::string::npos) << result.status();
}

TEST(ModelImportTest, FilesThatAreNotWeightsAreNamed) {
  struct Case {
    std::string file;
    std::string says;
  };
  const std::string dir = fs::path(::testing::TempDir()) / "import-not-weights";
  fs::create_directories(dir);
  ASSERT_TRUE(WriteFileAtomic(dir + "/notes.pth", "these are not weights\n").ok());
  for (const Case& c : {Case{FixtureDir() + "/torchscript.pt", "TorchScript archive"},
                        Case{FixtureDir() + "/legacy.pth", "legacy PyTorch file"},
                        Case{FixtureDir() + "/cmyk.jpg", "a JPEG image"},
                        Case{dir + "/notes.pth", "a text file"}}) {
    ModelImportOptions o = Resnet34Options("resnet34_7cls.pth");
    o.weights_path = c.file;
    auto result = ImportModel(o);
    ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.file;
    EXPECT_NE(result.status().message().find(c.says), std::string::npos) << result.status();
    EXPECT_FALSE(fs::exists(o.output_dir));
  }
}

TEST(ModelImportTest, NonFiniteWeightsAreRefused) {
  auto model = CreateModel([] {
    v1::ModelSpec s;
    s.set_architecture(v1::SMALL_CNN);
    s.set_num_classes(2);
    s.set_in_channels(1);
    return s;
  }());
  ASSERT_TRUE(model.ok());
  StateDict weights = GetStateDict(**model);
  weights["fc.bias"] = weights["fc.bias"].clone();
  weights["fc.bias"][1] = std::numeric_limits<float>::quiet_NaN();
  const std::string path = ::testing::TempDir() + "/nan.safetensors";
  ASSERT_TRUE(WriteFileAtomic(path, *SerializeSafetensors(weights)).ok());
  ModelImportOptions o = Resnet34Options("unused");
  o.weights_path = path;
  o.model.set_architecture(v1::SMALL_CNN);
  o.model.set_in_channels(1);
  o.class_names = {"a", "b"};
  o.preprocess = DefaultPreprocess(v1::SMALL_CNN);
  auto result = ImportModel(o);
  ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("NaN or infinite values in: fc.bias"), std::string::npos)
      << result.status();
}

TEST(ModelImportTest, BadOptionsAreRefusedBeforeReadingTheFile) {
  ModelImportOptions o = Resnet34Options("resnet34_7cls.pth");
  o.name = "no spaces";
  EXPECT_EQ(ImportModel(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Resnet34Options("resnet34_7cls.pth");
  o.class_names = {"a", "a", "b", "c", "d", "e", "f"};
  EXPECT_NE(ImportModel(o).status().message().find("appears twice"), std::string::npos);
  o = Resnet34Options("resnet34_7cls.pth");
  fs::create_directories(o.output_dir);
  EXPECT_EQ(ImportModel(o).status().code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace kennel::core
