#include "core/ml/weights.h"

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <iostream>
#include <sstream>

#include "core/files.h"
#include "core/ml/models.h"
#include "core/testing/logits.h"
#include "core/testing/paths.h"

namespace kennel::core {
namespace {

using testing::FixtureDir;
using testing::LogitsAgree;
using testing::Torch2Fixture;

std::shared_ptr<Classifier> Make(v1::Architecture arch, int classes, v1::Head head = v1::LINEAR) {
  v1::ModelSpec spec;
  spec.set_architecture(arch);
  spec.set_num_classes(classes);
  spec.set_head(head);
  return *CreateModel(spec);
}

// A fixture's input and the logits torchvision computed for it.
struct TorchvisionIo {
  torch::Tensor input, logits;
};

TorchvisionIo ReadReference(const std::string& io_file) {
  auto io = ParseSafetensors(*ReadFile(FixtureDir() + "/" + io_file));
  EXPECT_TRUE(io.ok()) << io.status();
  if (!io.ok()) return {};
  return {io->at("input"), io->at("logits")};
}

// Our eval-mode logits for `input` with `weights` loaded into `model`.
torch::Tensor Forward(Classifier& model, const StateDict& weights, const torch::Tensor& input) {
  EXPECT_TRUE(LoadStateDict(model, weights).ok());
  model.eval();
  torch::NoGradGuard no_grad;
  return model.forward(input);
}

// Loads a torchvision state_dict file into our model and checks the eval-mode logits against
// the ones torchvision computed for the same input (to the bound core/testing/logits.h
// derives; WeightsTest.TheParityBoundCatchesAWrongTensor shows what it catches).
void ExpectParity(std::shared_ptr<Classifier> model, const std::string& weights_file,
                  const std::string& io_file) {
  auto weights = ReadWeightsFile(FixtureDir() + "/" + weights_file);
  ASSERT_TRUE(weights.ok()) << weights.status();
  const TorchvisionIo ref = ReadReference(io_file);
  ASSERT_TRUE(ref.input.defined());
  const ::testing::AssertionResult agree = LogitsAgree(Forward(*model, *weights, ref.input), ref.logits);
  EXPECT_TRUE(agree) << weights_file;
  std::cout << weights_file << ": " << agree.message() << "\n";
  // Logits of distinct random inputs must differ: guards against a degenerate comparison.
  EXPECT_GT(ref.logits.std().item<double>(), 1e-3);
}

TEST(WeightsTest, TorchvisionResnet18StateDictGivesSameLogits) {
  ExpectParity(Make(v1::RESNET18, 1000), "resnet18.pth", "resnet18_io.safetensors");
}

TEST(WeightsTest, TorchvisionResnet50WithSeedHeadGivesSameLogits) {
  ExpectParity(Make(v1::RESNET50, 133, v1::MLP), "resnet50_mlp.pth", "resnet50_mlp_io.safetensors");
}

TEST(WeightsTest, SafetensorsFromPythonGivesSameLogits) {
  ExpectParity(Make(v1::RESNET50, 133, v1::MLP), "resnet50_mlp.safetensors",
               "resnet50_mlp_io.safetensors");
}

// The parity bound is loose enough for any CPU's rounding, and still fails on each of the
// mistakes a weights loader makes, planted one at a time into the ResNet-50 fixture's
// weights: the mildest ones measured (one layer of ResNet-50's first block) are chosen.
TEST(WeightsTest, TheParityBoundCatchesAWrongTensor) {
  auto weights = ReadWeightsFile(FixtureDir() + "/resnet50_mlp.pth");
  ASSERT_TRUE(weights.ok()) << weights.status();
  const TorchvisionIo ref = ReadReference("resnet50_mlp_io.safetensors");
  ASSERT_TRUE(ref.input.defined());
  auto model = Make(v1::RESNET50, 133, v1::MLP);
  ASSERT_TRUE(LogitsAgree(Forward(*model, *weights, ref.input), ref.logits));  // Unchanged: agrees.
  const std::string bn = "layer1.0.bn1.", conv = "layer1.0.conv2.weight";
  const std::vector<std::pair<std::string, std::function<void(StateDict&)>>> plants = {
      // (The variance keeps its sign, so the logits stay finite: the bound decides, not a NaN.)
      {"running_mean and running_var swapped",
       [&](StateDict& w) {
         const torch::Tensor mean = w[bn + "running_mean"];
         w[bn + "running_mean"] = w[bn + "running_var"];
         w[bn + "running_var"] = mean.abs();
       }},
      {"running statistics missing (left at mean 0, variance 1: no normalisation)",
       [&](StateDict& w) {
         w[bn + "running_mean"] = torch::zeros_like(w[bn + "running_mean"]);
         w[bn + "running_var"] = torch::ones_like(w[bn + "running_var"]);
       }},
      {"a 3x3 convolution transposed in its window", [&](StateDict& w) { w[conv] = w[conv].transpose(2, 3).contiguous(); }},
      {"a convolution's input and output channels swapped",
       [&](StateDict& w) { w[conv] = w[conv].transpose(0, 1).contiguous(); }},
  };
  for (const auto& [what, plant] : plants) {
    StateDict planted = *weights;
    plant(planted);
    const ::testing::AssertionResult agree = LogitsAgree(Forward(*model, planted, ref.input), ref.logits);
    EXPECT_FALSE(agree) << what;
    std::cout << what << ": " << agree.message() << "\n";
  }
  // BatchNorm normalising with the batch's statistics instead of the loaded ones.
  ASSERT_TRUE(LoadStateDict(*model, *weights).ok());
  model->train();
  torch::NoGradGuard no_grad;
  const ::testing::AssertionResult agree = LogitsAgree(model->forward(ref.input), ref.logits);
  EXPECT_FALSE(agree) << "training-mode BatchNorm";
  std::cout << "training-mode BatchNorm: " << agree.message() << "\n";
}

TEST(WeightsTest, PickleWithArbitraryGlobalsIsRefused) {
  auto weights = ReadWeightsFile(FixtureDir() + "/whole_model.pth");
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(weights.status().message().find("torch.nn.modules.linear"), std::string::npos)
      << weights.status();
}

// A .pth holding `program` as its data.pkl and one 4-float storage "0", as torch.save lays
// it out, for pickles torch.save would never write.
std::string PthWithPickle(const std::string& program) {
  std::string out;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t size) {
      out.append(static_cast<const char*>(data), size);
      return size;
    });
    writer.writeRecord("data.pkl", program.data(), program.size());
    const float storage[4] = {1, 2, 3, 4};
    writer.writeRecord("data/0", storage, sizeof(storage));
    writer.writeEndOfFile();
  }
  return out;
}

// Pickle opcodes for the programs below.
const std::string kEmptyDict = "}", kMark = "(", kSetItems = "u", kSetItem = "s", kStop = ".";
std::string Str(const std::string& s) {  // SHORT_BINUNICODE.
  std::string out = "\x8c";
  out.push_back(static_cast<char>(s.size()));
  return out + s;
}
std::string Global(const std::string& module, const std::string& name) { return "c" + module + "\n" + name + "\n"; }
std::string Int(int64_t v) {  // LONG1, 8 bytes.
  std::string out = "\x8a\x08";
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
  return out;
}

TEST(WeightsTest, APickleThatNestsADictInItselfIsRefusedNotFollowedForever) {
  // d = {}; d["state_dict"] = d  (through the memo): followed naively, the state_dict never
  // ends (a stack overflow); the values form a cycle (a leak).
  const std::string get_memo_0("h\x00", 2);
  const std::string program = kEmptyDict + "\x94" + Str("state_dict") + get_memo_0 + kSetItem + kStop;
  auto dict = ParseTorchStateDict(PthWithPickle(program), "cycle.pth");
  ASSERT_FALSE(dict.ok());
  EXPECT_EQ(dict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dict.status().message().find("too deep"), std::string::npos) << dict.status();
}

TEST(WeightsTest, ARecordDeclaredLargerThanTheFileIsRefusedBeforeLibTorchAllocatesIt) {
  // The torch_zip fuzzer's out-of-memory: LibTorch's reader allocated a record's declared
  // size. Here data.pkl's central directory entry claims 2 GB.
  const std::string program = kEmptyDict + kStop;
  std::string pth = PthWithPickle(program);
  ASSERT_TRUE(ParseTorchStateDict(pth, "ok.pth").ok());
  const size_t entry = pth.find(std::string("PK\x01\x02", 4));
  ASSERT_NE(entry, std::string::npos);
  for (int i = 0; i < 4; ++i) pth[entry + 24 + i] = i == 3 ? '\x7f' : '\xff';  // Uncompressed size.
  auto dict = ParseTorchStateDict(pth, "big.pth");
  ASSERT_FALSE(dict.ok());
  EXPECT_EQ(dict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dict.status().message().find("more than the whole file"), std::string::npos) << dict.status();
  // And what is no zip at all, or a zip cut short, is refused the same way.
  EXPECT_EQ(ParseTorchStateDict("not a zip", "x.pth").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseTorchStateDict(pth.substr(0, pth.size() / 2), "half.pth").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WeightsTest, ATensorViewWhoseExtentOverflowsIsRefused) {
  // _rebuild_tensor_v2(storage, 0, size=(2**62, 4), stride=(4, 2**62), False, {}): the last
  // element's offset overflows 64 bits, and must not wrap around into the storage.
  const std::string storage = kMark + Str("storage") + Global("torch", "FloatStorage") + Str("0") +
                              Str("cpu") + Int(4) + "tQ";
  const std::string tensor = Global("torch._utils", "_rebuild_tensor_v2") + kMark + storage + Int(0) +
                             kMark + Int(int64_t{1} << 62) + Int(4) + "t" + kMark + Int(4) +
                             Int(int64_t{1} << 62) + "t" + "\x89" + kEmptyDict + "tR";
  const std::string program = kEmptyDict + kMark + Str("w") + tensor + kSetItems + kStop;
  auto dict = ParseTorchStateDict(PthWithPickle(program), "overflow.pth");
  ASSERT_FALSE(dict.ok());
  EXPECT_EQ(dict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dict.status().message().find("outside its storage"), std::string::npos) << dict.status();

  // The same view with sizes that fit reads.
  const std::string fits = Global("torch._utils", "_rebuild_tensor_v2") + kMark + storage + Int(0) +
                           kMark + Int(2) + Int(2) + "t" + kMark + Int(2) + Int(1) + "t" + "\x89" +
                           kEmptyDict + "tR";
  auto ok = ParseTorchStateDict(PthWithPickle(kEmptyDict + kMark + Str("w") + fits + kSetItems + kStop), "ok.pth");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(torch::equal(ok->at("w"), torch::tensor({{1.f, 2.f}, {3.f, 4.f}})));
}

TEST(WeightsTest, ATupleCannotTakeItemsFromBelowAMark) {
  // MARK, then TUPLE2 with only the mark's items above it, then TUPLE (to the mark): the
  // second would reach below the stack's end once TUPLE2 had taken items under the mark.
  const std::string program = Int(1) + Int(2) + kMark + "\x86" + "t" + kStop;
  auto dict = ParseTorchStateDict(PthWithPickle(program), "marks.pth");
  ASSERT_FALSE(dict.ok());
  EXPECT_NE(dict.status().message().find("stack underflow"), std::string::npos) << dict.status();
}

// Files written by PyTorch 2.x (testing::Torch2Fixture): its zip layout (byteorder,
// .format_version, serialization_id records), storages of every dtype, views into shared
// storage, and checkpoint dicts with non-tensor entries.

TEST(WeightsTest, StateDictSavedByPyTorch2ReadsLikeOneSavedBy113) {
  const std::string path = Torch2Fixture("resnet18_torch2.pth");
  if (path.empty()) GTEST_SKIP() << "no PyTorch 2.x fixtures (configure KENNEL_PYTORCH2_PYTHON)";
  auto ours = ReadWeightsFile(path);
  ASSERT_TRUE(ours.ok()) << ours.status();
  auto reference = ReadWeightsFile(FixtureDir() + "/resnet18.pth");
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_EQ(ours->size(), reference->size());
  for (const auto& [name, t] : *reference) {
    ASSERT_TRUE(ours->contains(name)) << name;
    EXPECT_TRUE(torch::equal(ours->at(name), t)) << name;
  }
}

TEST(WeightsTest, EveryDtypeAndViewSavedByPyTorch2) {
  const std::string path = Torch2Fixture("dtypes_torch2.pth");
  if (path.empty()) GTEST_SKIP() << "no PyTorch 2.x fixtures (configure KENNEL_PYTORCH2_PYTHON)";
  auto ours = ReadWeightsFile(path);
  ASSERT_TRUE(ours.ok()) << ours.status();
  // One line per tensor: name dtype shape values (as float64).
  std::istringstream lines(*ReadFile(FixtureDir() + "/dtypes_torch2.txt"));
  std::string line;
  int checked = 0;
  while (std::getline(lines, line)) {
    std::istringstream in(line);
    std::string name, dtype, shape;
    in >> name >> dtype >> shape;
    std::vector<double> values;
    for (double v; in >> v;) values.push_back(v);
    ASSERT_TRUE(ours->contains(name)) << name;
    const torch::Tensor& t = ours->at(name);
    EXPECT_EQ(c10::toString(t.scalar_type()), std::string(dtype == "bfloat16" ? "BFloat16"
                                                        : dtype == "float16" ? "Half"
                                                        : dtype == "float64" ? "Double"
                                                        : dtype == "int64"   ? "Long"
                                                        : dtype == "bool"    ? "Bool"
                                                                             : "Float")) << name;
    const torch::Tensor flat = t.reshape({-1}).to(torch::kFloat64).contiguous();
    ASSERT_EQ(flat.numel(), static_cast<int64_t>(values.size())) << name;
    for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(flat[static_cast<int64_t>(i)].item<double>(), values[i]) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 8);
}

TEST(WeightsTest, CheckpointDictSavedByPyTorch2YieldsItsStateDict) {
  const std::string path = Torch2Fixture("checkpoint_torch2.pth");
  if (path.empty()) GTEST_SKIP() << "no PyTorch 2.x fixtures (configure KENNEL_PYTORCH2_PYTHON)";
  auto ours = ReadWeightsFile(path);
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_EQ(ours->size(), 2u);
  EXPECT_TRUE(ours->contains("fc.weight"));
  EXPECT_TRUE(ours->contains("fc.bias"));
}

TEST(WeightsTest, NotAWeightsFileIsRefused) {
  const std::string path = ::testing::TempDir() + "/garbage.bin";
  ASSERT_TRUE(WriteFileAtomic(path, "this is not a checkpoint at all").ok());
  auto weights = ReadWeightsFile(path);
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadWeightsFile("/nonexistent/w.pth").status().code(), absl::StatusCode::kNotFound);
}

TEST(WeightsTest, SafetensorsRoundTripKeepsDtypesShapesAndValues) {
  StateDict in;
  in["a.float"] = torch::randn({3, 4});
  in["b.long"] = torch::arange(7, torch::kLong);
  in["c.half"] = torch::randn({2, 2}).to(torch::kHalf);
  in["d.scalar"] = torch::tensor(5, torch::kLong);
  in["e.strided"] = torch::randn({4, 6}).t();  // Non-contiguous.
  auto bytes = SerializeSafetensors(in);
  ASSERT_TRUE(bytes.ok());
  auto out = ParseSafetensors(*bytes);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), in.size());
  for (const auto& [name, t] : in) {
    EXPECT_EQ(out->at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(out->at(name), t)) << name;
  }
}

TEST(WeightsTest, TruncatedOrCorruptSafetensorsAreRefused) {
  StateDict in{{"w", torch::randn({16, 16})}};
  std::string bytes = *SerializeSafetensors(in);
  EXPECT_FALSE(ParseSafetensors(bytes.substr(0, bytes.size() - 10)).ok());
  EXPECT_FALSE(ParseSafetensors(bytes.substr(0, 5)).ok());
  std::string bad_header = bytes;
  bad_header[8] = '#';  // The JSON header's opening brace.
  EXPECT_FALSE(ParseSafetensors(bad_header).ok());
  std::string huge_len = bytes;
  huge_len[7] = 0x7f;
  EXPECT_FALSE(ParseSafetensors(huge_len).ok());
}

TEST(WeightsTest, MismatchListsEveryProblemAndCopiesNothing) {
  auto model = Make(v1::RESNET18, 10);
  StateDict weights = GetStateDict(*Make(v1::RESNET18, 10));
  for (auto& [name, t] : weights) t = t.clone().fill_(0.5);
  weights.erase("layer1.0.conv1.weight");
  weights.erase("bn1.running_var");
  weights["extra.weight"] = torch::zeros({1});
  weights["conv1.weight"] = torch::zeros({64, 3, 3, 3});
  weights["bn1.num_batches_tracked"] = torch::zeros({}, torch::kFloat32);   // An int64 buffer.
  weights["layer1.0.bn1.weight"] = torch::ones({64}, torch::kInt64);         // Not a float.
  weights["layer1.0.bn2.weight"] = torch::ones({64}, torch::kFloat16);       // Converts: fine.
  const torch::Tensor before = model->named_parameters()["layer2.0.conv1.weight"].clone();
  auto status = LoadStateDict(*model, weights);
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  for (const char* name : {"layer1.0.conv1.weight", "bn1.running_var", "extra.weight",
                           "conv1.weight (file [64, 3, 3, 3], model [64, 3, 7, 7])",
                           "dtype mismatch: bn1.num_batches_tracked (file Float, model Long), "
                           "layer1.0.bn1.weight (file Long, model Float)"}) {
    EXPECT_NE(status.message().find(name), std::string::npos) << name << " in " << status;
  }
  EXPECT_TRUE(torch::equal(before, model->named_parameters()["layer2.0.conv1.weight"]));
  EXPECT_EQ(status.message().find("layer1.0.bn2.weight"), std::string::npos) << status;
}

TEST(WeightsTest, NonStrictLoadReplacesTheHead) {
  // ImageNet-style 1000-class weights into a 133-class model with the seed's head.
  auto source = Make(v1::RESNET18, 1000);
  auto target = Make(v1::RESNET18, 133, v1::MLP);
  const torch::Tensor head_before = target->named_parameters()["fc.0.weight"].clone();
  EXPECT_FALSE(LoadStateDict(*target, GetStateDict(*source)).ok());
  ASSERT_TRUE(LoadStateDict(*target, GetStateDict(*source), {.strict = false}).ok());
  EXPECT_TRUE(torch::equal(target->named_parameters()["layer4.1.conv2.weight"],
                           source->named_parameters()["layer4.1.conv2.weight"]));
  EXPECT_TRUE(torch::equal(target->named_parameters()["fc.0.weight"], head_before));
}

TEST(WeightsTest, DataParallelPrefixIsRemoved) {
  auto model = Make(v1::SMALL_CNN, 10);
  StateDict prefixed;
  for (auto& [name, t] : GetStateDict(*model)) prefixed["module." + name] = t;
  const std::string path = ::testing::TempDir() + "/dp.safetensors";
  ASSERT_TRUE(WriteFileAtomic(path, *SerializeSafetensors(prefixed)).ok());
  auto loaded = ReadWeightsFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->contains("fc.weight"));
}

}  // namespace
}  // namespace kennel::core
