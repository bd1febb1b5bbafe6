#include "core/ml/scripted_model.h"

#include <gtest/gtest.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

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
using testing::LogitsAgree;

v1::PreprocessSpec Input(int side) {
  v1::PreprocessSpec p;
  p.set_height(side);
  p.set_width(side);
  p.set_channels(3);
  return p;
}

ModelImportOptions ScriptOptions(const std::string& file, int classes = 7, int side = 32) {
  ModelImportOptions o;
  o.weights_path = FixtureDir() + "/" + file;
  o.name = "scripted";
  o.model.set_architecture(v1::TORCHSCRIPT);
  o.model.set_in_channels(3);
  for (int i = 0; i < classes; ++i) o.class_names.push_back("class " + std::to_string(i));
  o.preprocess = Input(side);
  o.output_dir = testing::NewTestOutputDir();
  return o;
}

std::shared_ptr<torch::jit::Module> Load(const std::string& file) {
  auto bytes = ReadFile(FixtureDir() + "/" + file);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  auto module = LoadTorchScript(*bytes, file);
  EXPECT_TRUE(module.ok()) << module.status();
  return module.ok() ? *module : nullptr;
}

void ExpectInvalid(const absl::Status& s, const std::vector<std::string>& words) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  for (const auto& w : words) EXPECT_NE(s.message().find(w), std::string::npos) << "'" << w << "' not in: " << s;
}

// The imported module, loaded as an inference node loads it, gives PyTorch eager's logits (to
// core/testing/logits.h's bound) and probabilities within 1e-5.
TEST(ScriptedModelTest, AnImportedModuleGivesPyTorchsAnswers) {
  const ModelImportOptions o = ScriptOptions("scripted_cnn.pt");
  auto imported = ImportModel(o);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->manifest.model().architecture(), v1::TORCHSCRIPT);
  EXPECT_EQ(imported->manifest.weights_file(), kScriptFile);
  EXPECT_EQ(imported->manifest.scripted().output(), v1::LOGITS);
  EXPECT_GT(imported->manifest.scripted().parameters(), 0);
  EXPECT_FALSE(imported->manifest.scripted().checked_with_torch().empty());
  auto loaded = LoadArtifact(o.output_dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_NE(loaded->script, nullptr);
  EXPECT_EQ(loaded->model, nullptr);
  auto io = ParseSafetensors(*ReadFile(FixtureDir() + "/scripted_cnn_io.safetensors"));
  ASSERT_TRUE(io.ok()) << io.status();
  torch::NoGradGuard no_grad;
  auto ours = ScriptForward(*loaded->script, io->at("input"));
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_TRUE(LogitsAgree(*ours, io->at("logits")));
  const double prob_diff = (torch::softmax(*ours, 1) - torch::softmax(io->at("logits"), 1)).abs().max().item<double>();
  EXPECT_LE(prob_diff, 1e-5);
  EXPECT_GT(io->at("logits").std().item<double>(), 1e-3);  // Not a comparison of constants.
}

TEST(ScriptedModelTest, WhatIsWrongIsSaidInOneLine) {
  // Weights alone, offered as TorchScript.
  ModelImportOptions o = ScriptOptions("resnet34_7cls.pth");
  ExpectInvalid(ImportModel(o).status(), {"resnet34_7cls.pth", "not a TorchScript archive", "--arch"});
  // The class names disagree with the output.
  o = ScriptOptions("scripted_cnn.pt", /*classes=*/5);
  ExpectInvalid(ImportModel(o).status(), {"[2, 7]", "5 class names", "[2, 5]"});
  // An input size the model refuses.
  o = ScriptOptions("scripted_cnn.pt", 7, /*side=*/64);
  ExpectInvalid(ImportModel(o).status(), {"refuses input [2, 3, 64, 64]"});
  // Logits declared as probabilities.
  o = ScriptOptions("scripted_cnn.pt");
  o.output = v1::PROBABILITIES;
  ExpectInvalid(ImportModel(o).status(), {"not probabilities", "--output-kind logits"});
  EXPECT_FALSE(fs::exists(o.output_dir));  // Nothing left behind.
  // A head on a TorchScript model.
  o = ScriptOptions("scripted_cnn.pt");
  o.model.set_head(v1::MLP);
  ExpectInvalid(ImportModel(o).status(), {"no head to choose"});
  // Not a file of any model.
  ExpectInvalid(LoadTorchScript("not a model", "junk.pt").status(), {"junk.pt", "not a TorchScript archive"});
}

TEST(ScriptedModelTest, AModuleThatOutputsProbabilitiesIsRecordedSo) {
  ModelImportOptions o = ScriptOptions("scripted_cnn_probs.pt");
  o.output = v1::PROBABILITIES;
  auto imported = ImportModel(o);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->manifest.scripted().output(), v1::PROBABILITIES);
  // The frozen module imports for serving; it has no parameters (training refuses it).
  auto frozen = Load("scripted_cnn_frozen.pt");
  ASSERT_NE(frozen, nullptr);
  auto info = CheckTorchScript(*frozen, Input(32), 7, v1::LOGITS);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->parameters(), 0);
}

// One module called from several threads at once answers as it does on one thread.
// TorchScript's profiling executor runs a module's first calls at each input shape through an
// instrumented graph (prim::profile nodes) before it optimises: the slow first requests a
// served model must not pay. ScriptForward runs the plain interpreter from the first call at
// every batch size; the same first call with the optimiser on is profiled (the check can fail).
TEST(ScriptedModelTest, NoBatchSizePaysForProfiling) {
  auto module = Load("scripted_cnn.pt");
  ASSERT_NE(module, nullptr);
  torch::NoGradGuard no_grad;
  for (int n : {1, 2, 3, 5, 8}) {
    ASSERT_TRUE(ScriptForward(*module, torch::rand({n, 3, 32, 32})).ok());
    const std::string graph = torch::jit::lastExecutedOptimizedGraph()->toString();
    EXPECT_EQ(graph.find("prim::profile"), std::string::npos) << "batch " << n << ":\n" << graph;
  }
  auto fresh = Load("scripted_cnn.pt");
  ASSERT_NE(fresh, nullptr);
  torch::jit::setGraphExecutorOptimize(true);
  fresh->forward({torch::rand({4, 3, 32, 32})});
  const std::string profiled = torch::jit::lastExecutedOptimizedGraph()->toString();
  torch::jit::setGraphExecutorOptimize(false);
  EXPECT_NE(profiled.find("prim::profile"), std::string::npos) << profiled;
}

TEST(ScriptedModelTest, OneModuleSharedByThreadsGivesOneThreadsAnswers) {
  auto module = Load("scripted_cnn.pt");
  ASSERT_NE(module, nullptr);
  torch::manual_seed(3);
  std::vector<torch::Tensor> inputs;
  for (int i = 0; i < 8; ++i) inputs.push_back(torch::randn({1 + i % 4, 3, 32, 32}));
  std::vector<torch::Tensor> alone;
  {
    c10::InferenceMode guard;
    for (const auto& x : inputs) alone.push_back(*ScriptForward(*module, x));
  }
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0}, failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      c10::InferenceMode guard;
      for (int round = 0; round < 25; ++round) {
        const size_t i = static_cast<size_t>((t + round) % 8);
        auto y = ScriptForward(*module, inputs[i]);
        if (!y.ok()) {
          ++failures;
        } else if (!torch::equal(*y, alone[i])) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace kennel::core
