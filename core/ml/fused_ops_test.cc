#include "core/ml/fused_ops.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

namespace kennel::core {
namespace {

torch::Tensor Reference(const torch::Tensor& x) { return torch::max_pool2d(torch::relu(x), 2); }

// Values and the input gradient of the fused op and the reference, for the same upstream
// gradient.
struct Result {
  torch::Tensor out, grad;
};

Result Run(const torch::Tensor& input, bool fused, const torch::Tensor& upstream) {
  torch::Tensor x = input.detach().clone().requires_grad_(true);
  torch::Tensor out = fused ? ReluMaxPool2x2(x) : Reference(x);
  out.backward(upstream);
  return {out.detach(), x.grad()};
}

void ExpectSameAsReference(const torch::Tensor& x) {
  SCOPED_TRACE(::testing::Message() << "shape " << x.sizes());
  const torch::Tensor upstream = torch::randn(Reference(x).sizes());
  const Result want = Run(x, false, upstream);
  const Result got = Run(x, true, upstream);
  ASSERT_EQ(got.out.sizes(), want.out.sizes());
  EXPECT_TRUE(torch::equal(got.out, want.out)) << (got.out - want.out).abs().max().item<float>();
  ASSERT_EQ(got.grad.sizes(), want.grad.sizes());
  EXPECT_TRUE(torch::equal(got.grad, want.grad)) << (got.grad - want.grad).abs().max().item<float>();
}

TEST(FusedOpsTest, ReluMaxPoolEqualsReferenceBitForBit) {
  torch::manual_seed(7);
  for (auto shape : std::vector<std::vector<int64_t>>{{64, 32, 28, 28}, {3, 64, 14, 14}, {1, 1, 2, 2}}) {
    ExpectSameAsReference(torch::randn(shape));
  }
}

TEST(FusedOpsTest, TiesGoToTheFirstMaximumAsInTheReference) {
  torch::manual_seed(8);
  // Small integers: most windows hold equal maxima, and many are all <= 0 (no gradient).
  ExpectSameAsReference(torch::randint(-2, 3, {4, 8, 12, 12}).to(torch::kFloat));
  ExpectSameAsReference(torch::ones({2, 3, 4, 4}));
  ExpectSameAsReference(torch::zeros({2, 3, 4, 4}));
}

TEST(FusedOpsTest, OddSizesDropTheLastRowAndColumnLikeFloorMode) {
  torch::manual_seed(9);
  ExpectSameAsReference(torch::randn({2, 5, 7, 9}));
  ExpectSameAsReference(torch::randn({1, 2, 3, 2}));
}

TEST(FusedOpsTest, NonContiguousInput) {
  torch::manual_seed(10);
  ExpectSameAsReference(torch::randn({4, 6, 10, 10}).transpose(2, 3));
  ExpectSameAsReference(torch::randn({6, 4, 10, 10}).transpose(0, 1));
}

TEST(FusedOpsTest, ForwardWithoutGradientMatchesUnderInferenceMode) {
  torch::manual_seed(11);
  const torch::Tensor x = torch::randn({5, 16, 28, 28});
  c10::InferenceMode guard;
  EXPECT_TRUE(torch::equal(ReluMaxPool2x2(x), Reference(x)));
}

TEST(FusedOpsTest, SameResultWithSeveralIntraOpThreads) {
  torch::manual_seed(12);
  const int before = torch::get_num_threads();
  torch::set_num_threads(2);
  ExpectSameAsReference(torch::randn({32, 32, 28, 28}));
  torch::set_num_threads(before);
}

TEST(FusedOpsTest, NanReachesTheOutput) {
  torch::Tensor x = torch::full({1, 1, 2, 4}, -1.0f);
  x[0][0][1][1] = std::numeric_limits<float>::quiet_NaN();
  x[0][0][0][2] = 5.0f;
  x[0][0][1][3] = std::numeric_limits<float>::quiet_NaN();
  const torch::Tensor out = ReluMaxPool2x2(x);
  EXPECT_TRUE(std::isnan(out[0][0][0][0].item<float>()));
  EXPECT_TRUE(std::isnan(out[0][0][0][1].item<float>()));
}

TEST(FusedOpsTest, OtherDtypesUseTheReference) {
  const torch::Tensor x = torch::randn({2, 3, 6, 6}, torch::kDouble);
  EXPECT_TRUE(torch::equal(ReluMaxPool2x2(x), Reference(x)));
}

}  // namespace
}  // namespace kennel::core
