// Fused CPU kernels for the layers where LibTorch 1.13's generic kernels dominate a model's
// time. Each one computes exactly what its unfused reference computes (values and gradients);
// tests compare them bit for bit.
#ifndef KENNEL_CORE_ML_FUSED_OPS_H_
#define KENNEL_CORE_ML_FUSED_OPS_H_

#include <ATen/core/Tensor.h>

namespace kennel::core {

// max_pool2d(relu(x), 2): ReLU and a 2x2 stride-2 max pool (floor mode) in one pass.
//
// Why: LibTorch 1.13's NCHW max_pool2d is a scalar loop that also writes int64 indices; on
// the small CNN at batch 64 the two pools cost more than both convolutions. This kernel reads
// the input once and, when a gradient is needed, keeps a one-byte window position per output
// instead of an int64 index. relu and max commute, so the values are the reference's; the
// gradient goes to the same element (the first maximum of the window, none when it is <= 0).
//
// Float32 CPU tensors [N, C, H, W] take the fused path (parallel over planes with the
// intra-op thread pool); anything else (other dtypes, CUDA) runs the reference ops.
// Differentiable with respect to `x`. Thread-safe like any torch op.
at::Tensor ReluMaxPool2x2(const at::Tensor& x);

}  // namespace kennel::core

#endif  // KENNEL_CORE_ML_FUSED_OPS_H_
