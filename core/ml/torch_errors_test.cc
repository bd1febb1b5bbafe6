#include "core/ml/torch_errors.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace kennel::core {
namespace {

TEST(TorchErrorsTest, DeviceOutOfMemoryIsResourceExhaustedAndOtherErrorsKeepTheirCode) {
  // What the CUDA caching allocator throws when a batch does not fit on the GPU.
  auto oom = CallTorch("inference", []() -> int {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2.00 GiB");
    return 0;
  });
  EXPECT_EQ(oom.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(oom.status().message().find("inference: out of memory: CUDA out of memory"), std::string::npos)
      << oom.status();
  auto shape = CallTorch("forward", [] { return torch::ones({2, 3}).matmul(torch::ones({2, 3})); },
                         absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shape.status().message().find('\n'), std::string::npos);  // No C++ backtrace.
  EXPECT_TRUE(CallTorch("fine", [] {}).ok());
}

}  // namespace
}  // namespace kennel::core
