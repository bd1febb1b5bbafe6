#include "core/ml/models.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <sstream>

#include "core/testing/paths.h"

namespace kennel::core {
namespace {

int64_t CountParameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

v1::ModelSpec Spec(v1::Architecture arch, int classes, v1::Head head = v1::LINEAR,
                   int channels = 3) {
  v1::ModelSpec spec;
  spec.set_architecture(arch);
  spec.set_num_classes(classes);
  spec.set_head(head);
  spec.set_in_channels(channels);
  return spec;
}

TEST(ModelsTest, ParameterCountsEqualTorchvision) {
  // torchvision's documented sizes for 1000 classes.
  EXPECT_EQ(CountParameters(**CreateModel(Spec(v1::RESNET18, 1000))), 11'689'512);
  EXPECT_EQ(CountParameters(**CreateModel(Spec(v1::RESNET34, 1000))), 21'797'672);
  EXPECT_EQ(CountParameters(**CreateModel(Spec(v1::RESNET50, 1000))), 25'557'032);
  // conv 1->32 (320) + conv 32->64 (18496) + fc 3136->128 (401536) + fc 128->10 (1290).
  EXPECT_EQ(CountParameters(**CreateModel(Spec(v1::SMALL_CNN, 10, v1::LINEAR, 1))), 421'642);
}

TEST(ModelsTest, StateDictNamesAndShapesEqualTorchvisionResnet18) {
  std::ifstream keys(testing::FixtureDir() + "/resnet18_keys.txt");
  ASSERT_TRUE(keys) << "run the torchvision fixture first";
  auto model = *CreateModel(Spec(v1::RESNET18, 1000));
  std::map<std::string, std::string> ours;
  auto shape_of = [](const torch::Tensor& t) {
    return t.dim() == 0 ? std::string("scalar") : c10::Join("x", t.sizes());
  };
  for (const auto& p : model->named_parameters()) ours[p.key()] = shape_of(p.value());
  for (const auto& b : model->named_buffers()) ours[b.key()] = shape_of(b.value());
  std::string name, shape;
  size_t count = 0;
  while (keys >> name >> shape) {
    ++count;
    ASSERT_TRUE(ours.contains(name)) << name;
    EXPECT_EQ(ours[name], shape) << name;
  }
  EXPECT_EQ(count, ours.size());
}

TEST(ModelsTest, SmallCnnClassifiesBatchOf28x28) {
  auto model = *CreateModel(Spec(v1::SMALL_CNN, 10, v1::LINEAR, 1));
  auto out = Forward(*model, torch::randn({5, 1, 28, 28}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->sizes(), (std::vector<int64_t>{5, 10}));
}

TEST(ModelsTest, WrongInputShapeIsInvalidArgument) {
  auto model = *CreateModel(Spec(v1::SMALL_CNN, 10, v1::LINEAR, 1));
  auto wrong_channels = Forward(*model, torch::randn({1, 3, 28, 28}));
  EXPECT_EQ(wrong_channels.status().code(), absl::StatusCode::kInvalidArgument);
  auto wrong_size = Forward(*model, torch::randn({1, 1, 32, 32}));
  EXPECT_EQ(wrong_size.status().code(), absl::StatusCode::kInvalidArgument);
  auto wrong_rank = Forward(*model, torch::randn({28, 28}));
  EXPECT_EQ(wrong_rank.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelsTest, MlpHeadUsesTheSeedsNames) {
  auto model = *CreateModel(Spec(v1::RESNET50, 133, v1::MLP));
  auto params = model->named_parameters();
  ASSERT_TRUE(params.contains("fc.0.weight"));
  EXPECT_EQ(params["fc.0.weight"].sizes(), (std::vector<int64_t>{128, 2048}));
  EXPECT_EQ(params["fc.2.weight"].sizes(), (std::vector<int64_t>{133, 128}));
  EXPECT_EQ(model->spec().head_hidden(), 128);
}

TEST(ModelsTest, FrozenBackboneGetsNoGradientAndKeepsBatchNormStats) {
  auto model = *CreateModel(Spec(v1::RESNET18, 4));
  model->FreezeBackbone();
  model->train();
  auto before = model->named_buffers()["bn1.running_mean"].clone();
  auto loss = model->forward(torch::randn({2, 3, 64, 64})).sum();
  loss.backward();
  for (const auto& p : model->named_parameters()) {
    const bool head = p.key().rfind("fc.", 0) == 0;
    EXPECT_EQ(p.value().requires_grad(), head) << p.key();
    EXPECT_EQ(p.value().grad().defined(), head) << p.key();
  }
  EXPECT_TRUE(torch::equal(before, model->named_buffers()["bn1.running_mean"]));
  EXPECT_TRUE(model->is_training());
}

TEST(ModelsTest, BadSpecsAreRejected) {
  EXPECT_EQ(CreateModel(Spec(v1::ARCHITECTURE_UNSPECIFIED, 10)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateModel(Spec(v1::RESNET18, 0)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateModel(Spec(v1::RESNET18, 10, v1::LINEAR, 2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateModel(Spec(v1::SMALL_CNN, 10, v1::MLP, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ModelsTest, ArchitectureNamesRoundTrip) {
  for (auto arch : {v1::SMALL_CNN, v1::RESNET18, v1::RESNET34, v1::RESNET50}) {
    EXPECT_EQ(*ParseArchitecture(ArchitectureName(arch)), arch);
  }
  EXPECT_EQ(*ParseArchitecture("ResNet50"), v1::RESNET50);
  EXPECT_FALSE(ParseArchitecture("vgg16").ok());
}

}  // namespace
}  // namespace kennel::core
