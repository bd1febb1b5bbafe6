#include "inference_node/metrics.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace kennel::inference {
namespace {

// The sum line of a histogram, parsed back.
double RenderedSum(const Histogram& h) {
  std::string out;
  h.Render("x", "", &out);
  const size_t at = out.find("x_sum ");
  EXPECT_NE(at, std::string::npos) << out;
  return std::strtod(out.c_str() + at + 6, nullptr);
}

// A node that has served for hours has a stage sum of thousands of seconds: printed with
// StrCat's 6 significant digits, 17533.912 came out as 17533.9.
TEST(MetricsTest, SumsKeepEveryDigit) {
  Histogram h({0.001, 0.01});
  h.Observe(17533.912345678901);
  h.Observe(0.000123456789);
  EXPECT_EQ(RenderedSum(h), 17533.912345678901 + 0.000123456789);
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  const double long_run = 17533.912345678901;
  EXPECT_EQ(std::strtod(FormatMetricValue(long_run).c_str(), nullptr), long_run);
  EXPECT_EQ(FormatMetricValue(long_run).rfind("17533.9123456789", 0), 0u) << FormatMetricValue(long_run);
}

}  // namespace
}  // namespace kennel::inference
