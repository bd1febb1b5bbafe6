#include "inference_node/metrics.h"

#include <charconv>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace kennel::inference {
namespace {

std::vector<double> LatencyBounds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
}


}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), buckets_(bounds_.size() + 1) {}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + value, std::memory_order_relaxed)) {
  }
}

std::string FormatMetricValue(double value) {
  // Shortest text that reads back as the same double: a long-running node's sums keep every
  // digit (StrCat's 6 significant digits turned 17533.912 s into 17533.9).
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  return ec == std::errc() ? std::string(buf, end) : absl::StrCat(value);
}

void Histogram::Render(const std::string& name, const std::string& labels, std::string* out) const {
  const std::string sep = labels.empty() ? "" : ",";
  int64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    const std::string le = i < bounds_.size() ? FormatMetricValue(bounds_[i]) : "+Inf";
    absl::StrAppend(out, name, "_bucket{", labels, sep, "le=\"", le, "\"} ", cumulative, "\n");
  }
  const std::string braces = labels.empty() ? "" : absl::StrCat("{", labels, "}");
  absl::StrAppend(out, name, "_sum", braces, " ", FormatMetricValue(sum_.load(std::memory_order_relaxed)), "\n");
  absl::StrAppend(out, name, "_count", braces, " ", count_.load(std::memory_order_relaxed), "\n");
}

Metrics::Metrics()
    : queue_(LatencyBounds()), preprocess_(LatencyBounds()), inference_(LatencyBounds()),
      total_(LatencyBounds()), batch_({1, 2, 4, 8, 16, 32, 64, 128, 256}) {}

void Metrics::CountRequest(absl::StatusCode code) {
  const int c = static_cast<int>(code);
  requests_[c >= 0 && c < kCodes ? c : 2].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::ObserveStages(double queue_s, double preprocess_s, double inference_s, double total_s) {
  queue_.Observe(queue_s);
  preprocess_.Observe(preprocess_s);
  inference_.Observe(inference_s);
  total_.Observe(total_s);
}

void Metrics::ObserveBatch(int size) { batch_.Observe(size); }

void Metrics::SetModel(const std::string& name, int64_t version) {
  absl::MutexLock lock(&mu_);
  model_ = name;
  version_ = version;
}

void Metrics::SetQueueDepth(std::function<int()> depth) {
  absl::MutexLock lock(&mu_);
  depth_ = std::move(depth);
}

std::string Metrics::Render() {
  std::string out;
  out += "# HELP kennel_requests_total Classification requests answered, by gRPC status code.\n";
  out += "# TYPE kennel_requests_total counter\n";
  for (int c = 0; c < kCodes; ++c) {
    const int64_t n = requests_[c].load(std::memory_order_relaxed);
    if (n > 0 || c == 0) absl::StrAppend(&out, "kennel_requests_total{code=\"",
                                     absl::StatusCodeToString(static_cast<absl::StatusCode>(c)), "\"} ", n, "\n");
  }
  out += "# HELP kennel_stage_seconds Server-side latency by stage.\n# TYPE kennel_stage_seconds histogram\n";
  queue_.Render("kennel_stage_seconds", "stage=\"queue\"", &out);
  preprocess_.Render("kennel_stage_seconds", "stage=\"preprocess\"", &out);
  inference_.Render("kennel_stage_seconds", "stage=\"inference\"", &out);
  total_.Render("kennel_stage_seconds", "stage=\"total\"", &out);
  out += "# HELP kennel_batch_size Sizes of the batches the dynamic batcher ran.\n# TYPE kennel_batch_size histogram\n";
  batch_.Render("kennel_batch_size", "", &out);
  absl::MutexLock lock(&mu_);
  out += "# HELP kennel_queue_depth Requests waiting for preprocessing or a batch.\n# TYPE kennel_queue_depth gauge\n";
  absl::StrAppend(&out, "kennel_queue_depth ", depth_ ? depth_() : 0, "\n");
  out += "# HELP kennel_model_version Model version being served.\n# TYPE kennel_model_version gauge\n";
  absl::StrAppend(&out, "kennel_model_version{model=\"", model_, "\"} ", version_, "\n");
  return out;
}

}  // namespace kennel::inference
