#include "inference_node/metrics.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "absl/time/time.h"

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

// GetServingStats' counters: answers by code name, batches by size bucket (not cumulative),
// the model served.
TEST(MetricsTest, StatsCountAnswersByCodeAndBatchesBySize) {
  Metrics metrics;
  EXPECT_EQ(metrics.Stats().requests_by_code().at("OK"), 0);  // OK is always there.
  EXPECT_EQ(metrics.Stats().model(), "");
  for (int i = 0; i < 3; ++i) metrics.CountRequest(absl::StatusCode::kOk);
  metrics.CountRequest(absl::StatusCode::kInvalidArgument);
  for (int size : {1, 3, 4, 64, 300}) metrics.ObserveBatch(size);
  metrics.SetModel("fashion", 7);
  const kennel::v1::ServingStats stats = metrics.Stats();
  EXPECT_EQ(stats.requests_by_code().at("OK"), 3);
  EXPECT_EQ(stats.requests_by_code().at("INVALID_ARGUMENT"), 1);
  EXPECT_EQ(stats.requests_by_code().size(), 2u);
  ASSERT_EQ(stats.batch_size_counts_size(), stats.batch_size_bounds_size() + 1);
  ASSERT_EQ(stats.batch_size_bounds(2), 4);
  EXPECT_EQ(stats.batch_size_counts(0), 1);  // 1
  EXPECT_EQ(stats.batch_size_counts(1), 0);  // 2
  EXPECT_EQ(stats.batch_size_counts(2), 2);  // 3 and 4
  EXPECT_EQ(stats.batch_size_counts(6), 1);  // 64
  EXPECT_EQ(stats.batch_size_counts(stats.batch_size_counts_size() - 1), 1);  // 300, past 256
  EXPECT_EQ(stats.model(), "fashion:7");
}

// The load window on a fake timeline (TakeLoad is given the time): the figures follow from
// what was fed in, not from this machine's speed.
struct Timeline {
  Metrics metrics;
  absl::Time now = absl::FromUnixSeconds(1'000'000);
  kennel::v1::NodeLoad last;
  // One 250 ms window with `arrived` requests, `answered` answers and batches that computed
  // `busy` (counted when they end, as the batcher reports them).
  void Window(int arrived, int answered, absl::Duration busy) {
    for (int i = 0; i < arrived; ++i) metrics.Arrived();
    for (int i = 0; i < answered; ++i) metrics.CountRequest(absl::StatusCode::kOk);
    if (busy > absl::ZeroDuration()) metrics.ObserveBusy(busy);
    now += absl::Milliseconds(250);
    last = metrics.TakeLoad(/*instances=*/1, /*queued=*/0, now);
  }
};

TEST(MetricsTest, OfferedLoadIsTheShareOfCapacityTheArrivalsAsk) {
  Timeline t;
  t.Window(0, 0, absl::ZeroDuration());  // Starts the timeline.
  // Idle.
  for (int i = 0; i < 4; ++i) t.Window(0, 0, absl::ZeroDuration());
  EXPECT_EQ(t.last.offered_load(), 0);
  // Half busy, keeping up: 4 requests of 31.25 ms per window.
  for (int i = 0; i < 8; ++i) t.Window(4, 4, absl::Microseconds(125'000));
  EXPECT_DOUBLE_EQ(t.last.busy_fraction(), 0.5);
  EXPECT_DOUBLE_EQ(t.last.offered_load(), 0.5);
  EXPECT_EQ(t.last.arrivals_per_s(), 16);
  // Batches longer than a window (500 ms, 8 requests each, back to back): windows alternate
  // between no answer and a whole batch's answers and work, yet every second reads fully busy
  // and keeping up (the work a window could not hold is carried into the next).
  for (int i = 0; i < 12; ++i) {
    const bool ends = i % 2 == 1;
    t.Window(/*arrived=*/4, ends ? 8 : 0, ends ? absl::Milliseconds(500) : absl::ZeroDuration());
    if (i >= 4) {
      EXPECT_DOUBLE_EQ(t.last.busy_fraction(), 1) << i;
      EXPECT_DOUBLE_EQ(t.last.offered_load(), 1) << i;
    }
  }
  // Overloaded: twice as many requests arrive as it answers, busy all the time.
  for (int i = 0; i < 8; ++i) t.Window(8, 4, absl::Milliseconds(250));
  EXPECT_DOUBLE_EQ(t.last.busy_fraction(), 1);
  EXPECT_NEAR(t.last.offered_load(), 2, 1e-9);
  EXPECT_GT(t.last.in_flight(), 0);
}

TEST(MetricsTest, FailuresAreCountedAsDrainFailuresOnlyOnceTheNodeDrains) {
  Timeline t;
  t.metrics.CountRequest(absl::StatusCode::kInvalidArgument);  // A bad request, before: not counted.
  t.Window(0, 0, absl::ZeroDuration());
  EXPECT_EQ(t.last.failed_while_draining(), 0);
  t.metrics.BeginDrain();
  t.metrics.CountRequest(absl::StatusCode::kOk);
  t.metrics.CountRequest(absl::StatusCode::kUnavailable);
  t.Window(0, 0, absl::ZeroDuration());
  t.metrics.CountRequest(absl::StatusCode::kCancelled);
  t.Window(0, 0, absl::ZeroDuration());
  EXPECT_EQ(t.last.failed_while_draining(), 2) << "a running total since the drain began";
}

}  // namespace
}  // namespace kennel::inference
