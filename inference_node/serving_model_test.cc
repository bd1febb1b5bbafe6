#include "inference_node/serving_model.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>

#include "core/files.h"
#include "core/ml/aoti_model.h"
#include "core/ml/model_import.h"
#include "core/ml/weights.h"
#include "core/testing/paths.h"

namespace kennel::inference {
namespace {

TEST(ServingModelTest, AReducedPrecisionMuchSlowerThanFp32IsWarnedAboutWithTheFigures) {
  // The AMD EPYC: bf16 emulated, ~10x fp32's time.
  auto warning = ReducedPrecisionWarning("bf16", absl::Milliseconds(900), absl::Milliseconds(90), 8);
  ASSERT_TRUE(warning.has_value());
  EXPECT_NE(warning->find("10.0x slower than fp32"), std::string::npos) << *warning;
  EXPECT_NE(warning->find("900.0 ms against 90.0 ms"), std::string::npos) << *warning;
  EXPECT_NE(warning->find("--precision fp32"), std::string::npos) << *warning;
  // Native bf16 (faster), or about as fast: nothing to say; fp32 is never compared.
  EXPECT_FALSE(ReducedPrecisionWarning("bf16", absl::Milliseconds(50), absl::Milliseconds(90), 8).has_value());
  EXPECT_FALSE(ReducedPrecisionWarning("bf16", absl::Milliseconds(130), absl::Milliseconds(90), 8).has_value());
  EXPECT_FALSE(ReducedPrecisionWarning("fp32", absl::Milliseconds(900), absl::Milliseconds(90), 8).has_value());
}

TEST(ServingModelTest, CudaSettingsParseAndPrint) {
  auto all = ParseCudaTuning("all");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(CudaTuningText(*all), "channels_last,cudnn_benchmark,pinned_upload,own_stream");
  auto none = ParseCudaTuning("none");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(CudaTuningText(*none), "none");
  auto two = ParseCudaTuning("pinned_upload,channels_last");
  ASSERT_TRUE(two.ok());
  EXPECT_TRUE(two->channels_last && two->pinned_upload && !two->cudnn_benchmark && !two->own_stream);
  auto bad = ParseCudaTuning("channels_last,tf32");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("\"tf32\""), std::string::npos) << bad.status();
}

// The user's model file imported with 7 classes at 3x32x32, as the fixtures' models take.
core::ModelImportOptions UserModel(const std::string& path, v1::Architecture arch, v1::OutputKind output) {
  core::ModelImportOptions o;
  o.weights_path = path;
  o.name = "users";
  o.model.set_architecture(arch);
  o.model.set_in_channels(3);
  for (int i = 0; i < 7; ++i) o.class_names.push_back(std::to_string(i));
  o.preprocess.set_height(32);
  o.preprocess.set_width(32);
  o.preprocess.set_channels(3);
  o.output = output;
  o.output_dir = ::testing::TempDir() + "/served-" + std::filesystem::path(path).filename().string() + "-" +
                 std::to_string(::getpid());
  std::filesystem::remove_all(o.output_dir);
  return o;
}

// Each row of `inputs` submitted at once to the artifact served on two instances (batches of
// up to 4), and the probabilities each got.
std::vector<torch::Tensor> ServeRows(const std::string& artifact_dir, const torch::Tensor& inputs) {
  RealClock clock;
  ServingModelOptions options;
  options.instances = 2;
  options.batcher.max_batch_size = 4;
  auto model = ServingModel::Load(artifact_dir, options, &clock, nullptr);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  const int n = static_cast<int>(inputs.size(0));
  absl::Mutex mu;
  std::vector<torch::Tensor> got(static_cast<size_t>(n));
  int answered = 0;
  for (int i = 0; i < n; ++i) {
    EXPECT_TRUE((*model)->Submit(BatchItem{inputs[i].clone(), absl::InfiniteFuture(),
                                           [&, i](absl::StatusOr<BatchResult> r) {
                                             EXPECT_TRUE(r.ok()) << r.status();
                                             absl::MutexLock lock(&mu);
                                             if (r.ok()) got[static_cast<size_t>(i)] = r->Row().clone();
                                             ++answered;
                                           }})
                    .ok());
  }
  absl::MutexLock lock(&mu);
  auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return answered == n; };
  EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(60)));
  return got;
}

// A TorchScript artifact (tests/fixtures: scripted_cnn.pt, 7 classes at 3x32x32) served through
// the batcher on two instances: PyTorch's probabilities (its logits through softmax) within
// 1e-5; the same module traced with a softmax and imported as PROBABILITIES is not put
// through softmax again.
TEST(ServingModelTest, ATorchScriptModelServesPyTorchsProbabilities) {
  auto io = core::ParseSafetensors(*core::ReadFile(core::testing::FixtureDir() + "/scripted_cnn_io.safetensors"));
  ASSERT_TRUE(io.ok()) << io.status();
  const torch::Tensor want = torch::softmax(io->at("logits"), 1);
  for (const auto& [file, output] : {std::pair<std::string, v1::OutputKind>{"scripted_cnn.pt", v1::LOGITS},
                                     {"scripted_cnn_probs.pt", v1::PROBABILITIES}}) {
    const core::ModelImportOptions o = UserModel(core::testing::FixtureDir() + "/" + file, v1::TORCHSCRIPT, output);
    ASSERT_TRUE(core::ImportModel(o).ok()) << file;
    const std::vector<torch::Tensor> got = ServeRows(o.output_dir, io->at("input"));
    ASSERT_EQ(got.size(), 3u);
    for (int i = 0; i < 3; ++i) {
      EXPECT_LE((got[static_cast<size_t>(i)] - want[i]).abs().max().item<double>(), 1e-5) << file << " row " << i;
    }
  }
}

// An AOTInductor package (PyTorch 2.x build) served the same way: PyTorch eager's
// probabilities within 1e-4; and refused, saying how to serve it, in a precision other than
// the one it was compiled for.
TEST(ServingModelTest, AnAotInductorPackageServesPyTorchsProbabilities) {
  const std::string package = core::testing::Torch2Fixture("aoti_cnn.pt2");
  if (package.empty() || !core::HaveAotInductor()) GTEST_SKIP() << "no .pt2 fixture or no AOTInductor in this build";
  auto io = core::ReadWeightsFile(core::testing::FixtureDir() + "/aoti_cnn_io.pth");
  ASSERT_TRUE(io.ok()) << io.status();
  const torch::Tensor want = torch::softmax(io->at("logits"), 1);
  const core::ModelImportOptions o = UserModel(package, v1::AOTINDUCTOR, v1::LOGITS);
  auto imported = core::ImportModel(o);
  ASSERT_TRUE(imported.ok()) << imported.status();
  const std::vector<torch::Tensor> got = ServeRows(o.output_dir, io->at("input"));
  ASSERT_EQ(got.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(got[static_cast<size_t>(i)].defined());
    EXPECT_LE((got[static_cast<size_t>(i)] - want[i]).abs().max().item<double>(), 1e-4) << "row " << i;
  }
  EXPECT_GT(io->at("logits").std().item<double>(), 1e-3);  // Not a comparison of constants.
  RealClock clock;
  ServingModelOptions bf16;
  bf16.precision = "bf16";
  auto refused = ServingModel::Load(o.output_dir, bf16, &clock, nullptr);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("--precision fp32"), std::string::npos) << refused.status();
}

}  // namespace
}  // namespace kennel::inference
