// Prometheus metrics of an inference node, rendered in the text exposition format:
//   kennel_requests_total{code}          requests answered, by gRPC status code
//   kennel_stage_seconds{stage}          latency histograms: queue, preprocess, inference, total
//   kennel_batch_size                    histogram of the batch sizes actually run
//   kennel_queue_depth                   requests waiting (preprocessing + batching)
//   kennel_model_version{model}          the version being served
//   kennel_load_*                        the load of the last window (NodeLoad, TakeLoad): in flight,
//                                        busy fraction, arrivals and answers per second, p50/p99,
//                                        offered load (the autoscaler's signal)
// Lock-free counters (the load window's latencies under a small lock); thread-safe.
#ifndef KENNEL_INFERENCE_NODE_METRICS_H_
#define KENNEL_INFERENCE_NODE_METRICS_H_

#include <array>
#include <deque>
#include <atomic>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kennel/v1/autoscale.pb.h"
#include "kennel/v1/inference.pb.h"

namespace kennel::inference {

// A sample value as Prometheus text: the shortest decimal that reads back as the same double.
std::string FormatMetricValue(double value);

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  // Observations per bucket (not cumulative), one per bound and the last past every bound.
  std::vector<int64_t> Counts() const;
  // Appends the _bucket / _sum / _count lines.
  void Render(const std::string& name, const std::string& labels, std::string* out) const;

 private:
  const std::vector<double> bounds_;
  std::vector<std::atomic<int64_t>> buckets_;  // One per bound, plus +Inf.
  std::atomic<int64_t> count_{0};
  std::atomic<double> sum_{0};
};

class Metrics {
 public:
  Metrics();
  void CountRequest(absl::StatusCode code);
  void ObserveStages(double queue_s, double preprocess_s, double inference_s, double total_s);
  void ObserveBatch(int size);
  // The load window: a request arrived; a batch computed for `busy`.
  void Arrived() { arrivals_.fetch_add(1, std::memory_order_relaxed); }
  // From now on, requests answered with an error are counted as failed while draining.
  void BeginDrain() { draining_.store(true, std::memory_order_relaxed); }
  void ObserveBusy(absl::Duration busy);
  // The window since the last call, measured and started anew: `instances` model instances
  // ran the batches, `queued` requests wait now. Also what /metrics shows until the next call.
  kennel::v1::NodeLoad TakeLoad(int instances, int queued, absl::Time now);
  void SetModel(const std::string& name, int64_t version);
  void SetQueueDepth(std::function<int()> depth);
  std::string Render();
  // The counters as GetServingStats answers them.
  kennel::v1::ServingStats Stats();

 private:
  static constexpr int kCodes = 17;
  // (code name, answers) for every code answered at least once, and OK always, in code order:
  // what /metrics and Stats report.
  std::vector<std::pair<std::string, int64_t>> AnswersByCode() const;
  std::array<std::atomic<int64_t>, kCodes> requests_{};
  Histogram queue_, preprocess_, inference_, total_, batch_;
  absl::Mutex mu_;
  std::string model_ ABSL_GUARDED_BY(mu_);
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<int()> depth_ ABSL_GUARDED_BY(mu_);
  // The load window.
  std::atomic<int64_t> arrivals_{0};
  std::atomic<int64_t> answered_{0};     // All codes.
  std::atomic<int64_t> busy_ns_{0};
  std::atomic<int64_t> in_flight_{0};    // Arrived, not yet answered.
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> failed_draining_{0};
  absl::Mutex window_mu_;
  std::vector<float> window_ms_ ABSL_GUARDED_BY(window_mu_);  // Latencies answered (a bounded sample).
  int64_t window_seen_ ABSL_GUARDED_BY(window_mu_) = 0;
  uint64_t rng_ ABSL_GUARDED_BY(window_mu_) = 1;
  absl::Time window_start_ ABSL_GUARDED_BY(window_mu_) = absl::Now();
  kennel::v1::NodeLoad last_load_ ABSL_GUARDED_BY(window_mu_);
  double busy_carry_s_ ABSL_GUARDED_BY(window_mu_) = 0;
  struct Window {
    double window_s, busy_s, capacity_s;
    int64_t arrived, answered;
  };
  std::deque<Window> history_ ABSL_GUARDED_BY(window_mu_);  // The windows of the last second.
};

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_METRICS_H_
