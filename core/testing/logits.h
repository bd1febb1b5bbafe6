// How closely Kennel's forward must match PyTorch's for the same weights and input: the one
// rule every parity test uses (weights import, model import).
#ifndef KENNEL_CORE_TESTING_LOGITS_H_
#define KENNEL_CORE_TESTING_LOGITS_H_

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace kennel::core::testing {

// Two correct float32 forwards of one network on one input differ only by rounding: float32
// keeps 24 bits (one rounding moves a value by at most 2^-24 = 6e-8 of it), and kernels sum
// the same products in different orders (AVX2 or AVX-512 register blocking, oneDNN or
// LibTorch versions, thread counts). Through ResNet-50's 53 layers (up to 4,608 products per
// output) that adds up to some tens of roundings of the logits' scale. Measured, as a
// fraction of the largest logit: 6.8e-7 (1.07e-4 of 157) between Debian's PyTorch 1.13 and
// LibTorch 2.11 on an AMD EPYC; up to 1.4e-6 between AVX-512 kernels and those of a CPU
// without AVX (core_test.ParityWithoutAvx); 3.5e-7 between float32 and float64. The bound
// below, 1e-4 of the scale, is 70x the largest of those. A wrong tensor moves the logits by
// far more: the mildest mistake weights_test plants (one BatchNorm's running statistics left
// at 0 and 1 in ResNet-50's first block) by 1.6e-2 of the scale, 160x the bound, and
// float16-rounded weights (1.2e-3) fail it too (model_import_test).
inline constexpr double kLogitsRelativeTolerance = 1e-4;

// Passes when every element of `ours` is within kLogitsRelativeTolerance x max|theirs| of the
// same element of `theirs` (same shape; theirs must not be all zeros, which would make any
// comparison meaningless). The message names the largest difference, the scale and the bound.
inline ::testing::AssertionResult LogitsAgree(const torch::Tensor& ours, const torch::Tensor& theirs) {
  if (ours.sizes() != theirs.sizes()) {
    return ::testing::AssertionFailure() << "shapes differ: " << ours.sizes() << " vs " << theirs.sizes();
  }
  const double scale = theirs.abs().max().item<double>();
  if (!(scale > 0)) return ::testing::AssertionFailure() << "the reference logits are all zero (or NaN)";
  const double diff = (ours.to(torch::kFloat64) - theirs.to(torch::kFloat64)).abs().max().item<double>();
  const double bound = kLogitsRelativeTolerance * scale;
  // Written so that a NaN difference fails.
  auto result = diff <= bound ? ::testing::AssertionSuccess() : ::testing::AssertionFailure();
  return result << "largest difference " << diff << " (" << diff / scale << " of the largest logit, " << scale
                << "); bound " << bound << " (" << kLogitsRelativeTolerance << " of it)";
}

}  // namespace kennel::core::testing

#endif  // KENNEL_CORE_TESTING_LOGITS_H_
