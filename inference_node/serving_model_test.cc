#include "inference_node/serving_model.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace kennel::inference
