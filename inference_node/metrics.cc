#include "inference_node/metrics.h"

#include <algorithm>
#include <charconv>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace kennel::inference {
namespace v1 = kennel::v1;
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
  const std::vector<int64_t> counts = Counts();
  int64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts[i];
    const std::string le = i < bounds_.size() ? FormatMetricValue(bounds_[i]) : "+Inf";
    absl::StrAppend(out, name, "_bucket{", labels, sep, "le=\"", le, "\"} ", cumulative, "\n");
  }
  const std::string braces = labels.empty() ? "" : absl::StrCat("{", labels, "}");
  absl::StrAppend(out, name, "_sum", braces, " ", FormatMetricValue(sum_.load(std::memory_order_relaxed)), "\n");
  absl::StrAppend(out, name, "_count", braces, " ", count_.load(std::memory_order_relaxed), "\n");
}

std::vector<int64_t> Histogram::Counts() const {
  std::vector<int64_t> counts;
  counts.reserve(buckets_.size());
  for (const auto& b : buckets_) counts.push_back(b.load(std::memory_order_relaxed));
  return counts;
}

Metrics::Metrics()
    : queue_(LatencyBounds()), preprocess_(LatencyBounds()), inference_(LatencyBounds()),
      total_(LatencyBounds()), batch_({1, 2, 4, 8, 16, 32, 64, 128, 256}) {}

void Metrics::CountRequest(absl::StatusCode code) {
  answered_.fetch_add(1, std::memory_order_relaxed);
  if (code != absl::StatusCode::kOk && draining_.load(std::memory_order_relaxed)) {
    failed_draining_.fetch_add(1, std::memory_order_relaxed);
  }
  const int c = static_cast<int>(code);
  requests_[c >= 0 && c < kCodes ? c : 2].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::ObserveStages(double queue_s, double preprocess_s, double inference_s, double total_s) {
  queue_.Observe(queue_s);
  preprocess_.Observe(preprocess_s);
  inference_.Observe(inference_s);
  total_.Observe(total_s);
  absl::MutexLock lock(&window_mu_);
  // A bounded uniform sample of the window's latencies (reservoir), for its p50 and p99.
  constexpr size_t kSample = 4096;
  const float ms = static_cast<float>(total_s * 1e3);
  ++window_seen_;
  if (window_ms_.size() < kSample) {
    window_ms_.push_back(ms);
  } else {
    rng_ = rng_ * 6364136223846793005ULL + 1442695040888963407ULL;
    const uint64_t slot = (rng_ >> 33) % static_cast<uint64_t>(window_seen_);
    if (slot < kSample) window_ms_[slot] = ms;
  }
}

void Metrics::ObserveBusy(absl::Duration busy) {
  busy_ns_.fetch_add(absl::ToInt64Nanoseconds(busy), std::memory_order_relaxed);
}

v1::NodeLoad Metrics::TakeLoad(int instances, int queued, absl::Time now) {
  const int64_t arrived = arrivals_.exchange(0, std::memory_order_relaxed);
  const int64_t answered = answered_.exchange(0, std::memory_order_relaxed);
  const int64_t busy_ns = busy_ns_.exchange(0, std::memory_order_relaxed);
  const int64_t in_flight = in_flight_.fetch_add(arrived - answered, std::memory_order_relaxed) + arrived - answered;
  absl::MutexLock lock(&window_mu_);
  const double window_s = std::max(1e-3, absl::ToDoubleSeconds(now - window_start_));
  window_start_ = now;
  v1::NodeLoad load;
  load.set_window_ms(static_cast<int32_t>(window_s * 1e3));
  load.set_in_flight(static_cast<int32_t>(std::max<int64_t>(0, in_flight)));
  load.set_queued(queued);
  // A batch is counted when it ends, so one window may get more than its length of work (a
  // batch that started in the one before): the excess is carried into the next window.
  const double capacity_s = window_s * std::max(1, instances);
  const double work_s = busy_ns * 1e-9 + busy_carry_s_;
  const double busy_s = std::min(work_s, capacity_s);
  busy_carry_s_ = std::min(work_s - busy_s, 4 * capacity_s);  // At most a second of work.
  load.set_busy_fraction(busy_s / capacity_s);
  load.set_arrivals_per_s(arrived / window_s);
  load.set_completions_per_s(answered / window_s);
  // Offered load over the last second of windows (a 250 ms window may hold no answer while a
  // long batch runs, or a whole batch's): busy x arrivals / answers. With no answer in that
  // second, a busy node with requests is at least full.
  history_.push_back({window_s, busy_s, capacity_s, arrived, answered});
  double span = 0, busy_sum = 0, capacity_sum = 0;
  int64_t arrived_sum = 0, answered_sum = 0;
  for (auto it = history_.rbegin(); it != history_.rend(); ++it) {
    span += it->window_s;
    busy_sum += it->busy_s;
    capacity_sum += it->capacity_s;
    arrived_sum += it->arrived;
    answered_sum += it->answered;
    if (span >= 1.0) {
      history_.erase(history_.begin(), std::next(it).base());
      break;
    }
  }
  const double busy = capacity_sum > 0 ? busy_sum / capacity_sum : 0;
  double offered = busy;
  if (answered_sum > 0) {
    offered = busy * static_cast<double>(arrived_sum) / static_cast<double>(answered_sum);
  } else if (busy > 0 && (arrived_sum > 0 || in_flight > 0)) {
    offered = std::max(busy, 1.0);
  }
  load.set_offered_load(offered);
  load.set_failed_while_draining(failed_draining_.load(std::memory_order_relaxed));
  if (!window_ms_.empty()) {
    auto at = [&](double q) {
      const size_t i = std::min(window_ms_.size() - 1, static_cast<size_t>(q * static_cast<double>(window_ms_.size())));
      std::nth_element(window_ms_.begin(), window_ms_.begin() + static_cast<std::ptrdiff_t>(i), window_ms_.end());
      return window_ms_[i];
    };
    load.set_p50_ms(at(0.5));
    load.set_p99_ms(at(0.99));
  }
  window_ms_.clear();
  window_seen_ = 0;
  last_load_ = load;
  return load;
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

std::vector<std::pair<std::string, int64_t>> Metrics::AnswersByCode() const {
  std::vector<std::pair<std::string, int64_t>> answers;
  for (int c = 0; c < kCodes; ++c) {
    const int64_t n = requests_[c].load(std::memory_order_relaxed);
    if (n > 0 || c == 0) answers.emplace_back(absl::StatusCodeToString(static_cast<absl::StatusCode>(c)), n);
  }
  return answers;
}

std::string Metrics::Render() {
  std::string out;
  out += "# HELP kennel_requests_total Classification requests answered, by gRPC status code.\n";
  out += "# TYPE kennel_requests_total counter\n";
  for (const auto& [code, n] : AnswersByCode()) {
    absl::StrAppend(&out, "kennel_requests_total{code=\"", code, "\"} ", n, "\n");
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
  absl::MutexLock window_lock(&window_mu_);
  const v1::NodeLoad& l = last_load_;
  const std::pair<const char*, double> gauges[] = {
      {"in_flight", l.in_flight()}, {"queued", l.queued()}, {"busy_fraction", l.busy_fraction()},
      {"arrivals_per_second", l.arrivals_per_s()}, {"answers_per_second", l.completions_per_s()},
      {"p50_seconds", l.p50_ms() / 1e3}, {"p99_seconds", l.p99_ms() / 1e3}, {"offered", l.offered_load()}};
  for (const auto& [name, value] : gauges) {
    absl::StrAppend(&out, "# HELP kennel_load_", name, " The node's load over its last report window.\n# TYPE kennel_load_", name, " gauge\nkennel_load_", name, " ",
                    FormatMetricValue(value), "\n");
  }
  return out;
}

v1::ServingStats Metrics::Stats() {
  v1::ServingStats stats;
  for (const auto& [code, n] : AnswersByCode()) (*stats.mutable_requests_by_code())[code] = n;
  for (double bound : batch_.bounds()) stats.add_batch_size_bounds(static_cast<int32_t>(bound));
  for (int64_t n : batch_.Counts()) stats.add_batch_size_counts(n);
  absl::MutexLock lock(&mu_);
  if (!model_.empty()) stats.set_model(absl::StrCat(model_, ":", version_));
  return stats;
}

}  // namespace kennel::inference
