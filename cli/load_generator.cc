#include "cli/load_generator.h"

#include <arpa/inet.h>
#include <grpcpp/create_channel.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/grpc_keepalive.h"
#include "core/tls.h"

namespace kennel::cli {
namespace {

// gRPC and absl share the canonical code numbers.
std::string CodeName(int code) { return absl::StatusCodeToString(static_cast<absl::StatusCode>(code)); }

// Shared by every worker.
struct State {
  State(const LoadOptions& o, int64_t n, const std::function<const std::string&(int64_t)>& p,
        const std::function<void(int64_t, const v1::ClassifyResponse&)>& r)
      : options(o), payload_count(n), payload(p), on_response(r) {}
  const LoadOptions& options;
  int64_t payload_count;
  const std::function<const std::string&(int64_t)>& payload;
  const std::function<void(int64_t, const v1::ClassifyResponse&)>& on_response;
  absl::Time start, end;
  std::atomic<int64_t> next{0};
  absl::Mutex mu;
  std::vector<double> latencies_ms ABSL_GUARDED_BY(mu);
  std::map<std::string, int64_t> errors ABSL_GUARDED_BY(mu);
  int64_t batch_sum ABSL_GUARDED_BY(mu) = 0;
  std::atomic<int64_t> sent{0};
  std::atomic<int64_t> restarts{0};
  std::atomic<int64_t> moves{0};

  // The endpoint set's revision now (0 without LoadOptions.follow).
  int64_t Revision() const { return options.follow ? options.follow->Current().second : 0; }

  // True once no more requests will be claimed.
  bool Over() {
    {
      absl::MutexLock lock(&mu);
      if (!retries.empty() && (options.max_requests > 0 || absl::Now() < end)) return false;
    }
    if (options.max_requests > 0) return next.load() >= options.max_requests;
    return absl::Now() >= end;
  }

  // The next request index, or -1 when the run is over. Open loop: waits for its slot.
  // A request a broken stream left unanswered, to send again on another stream (Classify is
  // idempotent): what a client does when its node goes away. At most kMaxAttempts sends.
  // A retry goes only to a stream opened after the break that left it: a stream already open
  // then may be on the same node (a draining node ends its streams one after another, and
  // handing the retry to the next of them to ask would spend its attempts there).
  static constexpr int kMaxAttempts = 3;
  struct Retry {
    int64_t index;
    absl::Time first_sent;
    int attempts;
    int64_t break_number;  // Of the break that left it unanswered.
  };
  std::deque<Retry> retries ABSL_GUARDED_BY(mu);
  std::map<int64_t, int> attempts ABSL_GUARDED_BY(mu);  // Sends so far of retried requests.
  int64_t breaks ABSL_GUARDED_BY(mu) = 0;                // Streams ended early so far.

  bool HasRetries() {
    absl::MutexLock lock(&mu);
    return !retries.empty();
  }

  // Breaks so far: what a stream opened now may take the retries of.
  int64_t Breaks() {
    absl::MutexLock lock(&mu);
    return breaks;
  }

  // A stream ended early; what it left unanswered is handed out with the returned number.
  int64_t Break() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return ++breaks; }

  // Hands `index` (sent at `sent_at`) back for another stream, or counts it failed with `code`
  // when it has had its attempts.
  void Unanswered(int64_t index, absl::Time sent_at, const std::string& code, int64_t break_number)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    int& n = attempts[index];
    n = std::max(n, 1);
    if (code == "UNAVAILABLE" && n < kMaxAttempts) {
      retries.push_back({index, sent_at, n, break_number});
      return;
    }
    attempts.erase(index);
    errors[code]++;
  }

  // The next request index, or -1 when the run is over. First the retries of breaks up to
  // `breaks_seen` (those before the caller's stream was opened). Open loop: waits for its slot.
  int64_t Claim(absl::Time* scheduled, int64_t breaks_seen) {
    {
      absl::MutexLock lock(&mu);
      auto it = std::find_if(retries.begin(), retries.end(),
                             [&](const Retry& r) { return r.break_number <= breaks_seen; });
      if (it != retries.end()) {
        const Retry r = *it;
        retries.erase(it);
        attempts[r.index] = r.attempts + 1;
        *scheduled = r.first_sent;  // Latency counts from the first send.
        return r.index;
      }
    }
    const int64_t i = next.fetch_add(1);
    if (options.max_requests > 0 && i >= options.max_requests) return -1;
    if (options.rate > 0) {
      *scheduled = start + absl::Seconds(static_cast<double>(i) / options.rate);
      if (*scheduled >= end) return -1;
      absl::SleepFor(*scheduled - absl::Now());
    } else {
      *scheduled = absl::Now();
      if (options.max_requests <= 0 && *scheduled >= end) return -1;
    }
    sent.fetch_add(1);
    return i;
  }
  v1::ClassifyRequest Request(int64_t i) const {
    v1::ClassifyRequest request;
    request.set_request_id(std::to_string(i));
    request.set_image(payload(i % payload_count));
    request.set_top_k(options.top_k);
    return request;
  }
  void Record(int64_t i, absl::Time sent_at, const grpc::Status& rpc, const v1::ClassifyResponse& r) {
    const int code = !rpc.ok() ? rpc.error_code() : r.error_code();
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - sent_at);
    if (code == 0 && on_response) on_response(i, r);
    absl::MutexLock lock(&mu);
    attempts.erase(i);
    if (code == 0) {
      latencies_ms.push_back(ms);
      batch_sum += r.batch_size();
    } else {
      errors[CodeName(code)]++;
    }
  }
};

// One worker's channel: to LoadOptions.server, or (follow) to the endpoint set of the latest
// revision, made again when it changes.
class WorkerChannel {
 public:
  WorkerChannel(State& s, int worker, std::unique_ptr<v1::Inference::Stub> fixed)
      : s_(s), worker_(worker), stub_(std::move(fixed)) {}
  // The stub for now and the revision it was made for; null while no node serves (following)
  // or when the set's addresses are unusable (counted as an error once per revision).
  std::pair<v1::Inference::Stub*, int64_t> Get() {
    if (s_.options.follow == nullptr) return {stub_.get(), 0};
    const auto [servers, revision] = s_.options.follow->Current();
    if (revision != revision_ || stub_ == nullptr) {
      revision_ = revision;
      // Streams that moved may still be taking their answers on the old channel: kept.
      if (stub_ != nullptr) old_.push_back(std::move(stub_));
      if (!servers.empty()) {
        grpc::ChannelArguments args;
        args.SetInt("kennel.client", worker_);
        // Worker c goes to node c mod n first (the others if it cannot be reached): the
        // streams spread evenly over the set, whatever its size.
        std::vector<std::string> list = absl::StrSplit(servers, ',', absl::SkipEmpty());
        std::rotate(list.begin(), list.begin() + static_cast<std::ptrdiff_t>(worker_ % list.size()), list.end());
        auto channel = InferenceChannel(absl::StrJoin(list, ","), args, /*in_order=*/true);
        if (channel.ok()) stub_ = v1::Inference::NewStub(*channel);
      }
    }
    return {stub_.get(), revision_};
  }

 private:
  State& s_;
  const int worker_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  std::vector<std::unique_ptr<v1::Inference::Stub>> old_;
  int64_t revision_ = -1;
};

// Following an endpoint set with no node in it: wait for one while the run lasts.
bool WaitForEndpoints(State& s, WorkerChannel& channel) {
  while (channel.Get().first == nullptr) {
    if (s.Over()) return false;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return true;
}

void UnaryWorker(State& s, WorkerChannel& channel) {
  while (true) {
    if (!WaitForEndpoints(s, channel)) return;
    v1::Inference::Stub& stub = *channel.Get().first;
    absl::Time scheduled;
    const int64_t i = s.Claim(&scheduled, /*breaks_seen=*/0);  // Unary calls retry in gRPC.
    if (i < 0) return;
    const v1::ClassifyRequest request = s.Request(i);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(s.options.deadline));
    v1::ClassifyResponse response;
    grpc::Status rpc = stub.Classify(&context, request, &response);
    s.Record(i, scheduled, rpc, response);
    if (rpc.error_code() == grpc::StatusCode::UNAVAILABLE) absl::SleepFor(absl::Milliseconds(100));
  }
}

// One ClassifyStream on gRPC's callback API: responses are handled in reactions on gRPC's own
// threads, so a message costs no thread hand-off (the sync API's reader and writer threads
// per stream spent most of the generator's CPU in context switches, CPU the server lacked).
// Closed loop: `depth` requests at once, then one more per response. Open loop: Run() paces
// the sends. gRPC allows one write in flight, so requests wait in `queue_` for their turn.
class StreamClient : public grpc::ClientBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse> {
 public:
  StreamClient(State& s, v1::Inference::Stub& stub, int64_t revision)
      : s_(s), breaks_seen_(s.Breaks()), revision_(revision) {
    // A counted run has no time limit; a timed one ends with the duration plus one deadline.
    const absl::Duration limit =
        s.options.max_requests > 0 ? absl::Hours(24) : s.end - absl::Now() + s.options.deadline;
    context_.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(limit));
    stub.async()->ClassifyStream(&context_, this);
    AddHold();  // Run() starts operations from outside reactions until it releases this.
    StartRead(&response_);
    StartCall();
  }

  // Sends this stream's share of the load and blocks until the stream has ended; returns how
  // it ended.
  // Sends this stream's share of the load and blocks until the stream has ended (returns how
  // it ended) or has moved: the endpoint set changed, so it sends no more and the caller opens
  // another stream at once while this one takes its answers (the caller keeps it until then).
  grpc::Status Run() {
    const int initial = s_.options.rate > 0 ? std::numeric_limits<int>::max() : s_.options.depth;
    for (int k = 0; k < initial && SendNext(); ++k) {
    }
    RemoveHold();
    std::unique_lock<std::mutex> lock(done_mu_);
    done_cv_.wait(lock, [this] { return done_ || moving_; });
    return done_ ? status_ : grpc::Status::OK;
  }

  ~StreamClient() override {
    std::unique_lock<std::mutex> lock(done_mu_);
    done_cv_.wait(lock, [this] { return done_; });
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) {  // The stream broke; OnDone reports what was left unanswered.
        queue_.clear();
        no_more_ = closing_ = true;
      }
    }
    Pump();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // The server closed the stream; OnDone follows.
    const int64_t i = std::stoll(response_.request_id());
    absl::Time sent_at;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = pending_.find(i);
      if (it != pending_.end()) {
        sent_at = it->second;
        pending_.erase(it);
      }
    }
    s_.Record(i, sent_at, grpc::Status::OK, response_);
    StartRead(&response_);
    if (s_.options.rate <= 0) SendNext();  // Closed loop: the answered slot is free again.
  }

  void OnDone(const grpc::Status& status) override {
    status_ = status;
    {
      std::lock_guard<std::mutex> lock(mu_);
      absl::MutexLock state_lock(&s_.mu);
      const std::string code = status.ok() ? "NO_RESPONSE" : CodeName(status.error_code());
      const int64_t break_number = s_.Break();
      for (const auto& [index, sent_at] : pending_) s_.Unanswered(index, sent_at, code, break_number);
    }
    std::lock_guard<std::mutex> lock(done_mu_);
    done_ = true;
    done_cv_.notify_one();
  }

 private:
  // Claims and queues the next request; false when the run is over (then WritesDone follows).
  bool SendNext() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closing_) return false;  // Broken or finished: claim nothing more for this stream.
    }
    if (s_.options.follow != nullptr && s_.Revision() != revision_) {
      // The endpoint set changed: this stream takes the answers it is owed and ends, and is
      // opened again on the new set (its node may be leaving).
      {
        std::lock_guard<std::mutex> lock(mu_);
        no_more_ = true;
        moved_ = true;
      }
      Pump();
      {
        std::lock_guard<std::mutex> lock(done_mu_);
        moving_ = true;
      }
      done_cv_.notify_one();
      return false;
    }
    absl::Time scheduled;
    const int64_t i = s_.Claim(&scheduled, breaks_seen_);  // Open loop: sleeps until the request's slot.
    // Built outside the lock: it copies the image, and responses take `mu_` too.
    v1::ClassifyRequest request = i >= 0 ? s_.Request(i) : v1::ClassifyRequest();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (i < 0) {
        no_more_ = true;
        exhausted_ = true;
      } else {
        // Every claimed request is answered or counted as an error in OnDone, even one
        // claimed as the stream broke: it is then never written.
        pending_[i] = scheduled;
        if (!closing_) queue_.push_back(std::move(request));
      }
    }
    Pump();
    return i >= 0;
  }

  // Starts the next write, or WritesDone once nothing is left to send. Start* is called
  // without `mu_` held: gRPC may run the reaction on this very thread.
  void Pump() {
    bool write = false, writes_done = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (writing_) return;
      if (!queue_.empty()) {
        current_ = std::move(queue_.front());
        queue_.pop_front();
        writing_ = write = true;
      } else if (no_more_ && !closing_) {
        closing_ = writes_done = true;
      }
    }
    if (write) StartWrite(&current_);
    if (writes_done) StartWritesDone();
  }

  State& s_;
  const int64_t breaks_seen_;  // When this stream was opened: the retries it may take.
  const int64_t revision_;     // Of the endpoint set it was opened on.
  grpc::ClientContext context_;
  v1::ClassifyResponse response_;  // Owned by the one read in flight.
  v1::ClassifyRequest current_;    // Owned by the one write in flight.
  std::mutex mu_;
  std::deque<v1::ClassifyRequest> queue_;  // Claimed, waiting for the write in flight.
  std::map<int64_t, absl::Time> pending_;  // Sent (or queued), not yet answered.
  bool writing_ = false, no_more_ = false, closing_ = false;

 public:
  // It ended because the endpoint set changed / because the run had no request left for it
  // (read after Run).
  bool moved() {
    std::lock_guard<std::mutex> lock(mu_);
    return moved_;
  }
  bool exhausted() {
    std::lock_guard<std::mutex> lock(mu_);
    return exhausted_;
  }

 private:
  bool moved_ = false;
  bool exhausted_ = false;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
  bool moving_ = false;  // Under done_mu_: Run returns, the stream finishes on its own.
  grpc::Status status_;  // Set in OnDone, read after done_.
};

void StreamWorker(State& s, WorkerChannel& channel) {
  // Streams that moved to a newer endpoint set, finishing; destroyed (each waits for its end)
  // when the worker returns.
  std::vector<std::unique_ptr<StreamClient>> moving;
  absl::Duration backoff = absl::Milliseconds(50);
  while (true) {
    if (!WaitForEndpoints(s, channel)) return;
    const auto [stub, revision] = channel.Get();
    auto client = std::make_unique<StreamClient>(s, *stub, revision);
    const grpc::Status ended = client->Run();
    if (client->moved()) {
      // Onto the new endpoint set at once; the old stream takes its answers meanwhile (its
      // unanswered requests, should its node fail, are retried as any break's).
      s.moves.fetch_add(1);
      moving.push_back(std::move(client));
      if (s.Over()) return;
      continue;
    }
    const bool exhausted = client->exhausted();
    client.reset();
    // An open-loop run is out of requests when the next one's slot is past its end, which
    // may be a moment before the end itself: a stream that ran out has finished, not broken.
    if (s.Over() || (exhausted && ended.ok() && !s.HasRetries())) return;
    // The stream broke early (a restarting node, a reset connection): open another.
    s.restarts.fetch_add(1);

    absl::SleepFor(std::min(backoff, s.options.max_requests > 0 ? backoff : s.end - absl::Now()));
    backoff = std::min(backoff * 2, absl::Seconds(1));
    if (ended.ok()) backoff = absl::Milliseconds(50);
  }
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

int64_t LoadReport::failed() const {
  int64_t n = 0;
  for (const auto& [code, count] : errors) n += count;
  return n;
}

std::string InferenceServiceConfig(bool health_checks) {
  // Classify is idempotent: retry it elsewhere when its node went away (UNAVAILABLE).
  const std::string retry = R"("methodConfig": [{
      "name": [{"service": "kennel.v1.Inference", "method": "Classify"}],
      "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "1s",
                      "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}])";
  if (!health_checks) return absl::StrCat("{", retry, "}");
  return absl::StrCat(R"({"loadBalancingConfig": [{"round_robin": {}}],
      "healthCheckConfig": {"serviceName": "kennel.v1.Inference"}, )",
                      retry, "}");
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> InferenceChannel(const std::string& servers,
                                                                grpc::ChannelArguments args, bool in_order) {
  args.SetMaxSendMessageSize(64 << 20);
  args.SetMaxReceiveMessageSize(64 << 20);
  core::SetClientKeepalive(args);  // A node behind a cut link fails over within ~15 s.
  const std::vector<std::string> list = absl::StrSplit(servers, ',', absl::SkipWhitespace());
  if (list.empty()) return absl::InvalidArgumentError("no inference node address given");
  auto credentials = core::MakeChannelCredentials(core::TlsFilesFromEnvironment());
  if (!credentials.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(credentials.status().message(),
                                                   " (from KENNEL_TLS_CA, KENNEL_TLS_CERT, KENNEL_TLS_KEY)"));
  }
  if (list.size() == 1) {
    args.SetServiceConfigJSON(InferenceServiceConfig(false));
    return grpc::CreateCustomChannel(list[0], *credentials, args);
  }
  // Several nodes: one channel over all of them ("ipv4:a:p,b:q"), each name resolved here.
  std::vector<std::string> resolved;
  for (const auto& server : list) {
    const size_t colon = server.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      return absl::InvalidArgumentError(absl::StrCat("'", server, "' is not host:port"));
    }
    const std::string host = server.substr(0, colon), port = server.substr(colon + 1);
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", host, " to an IPv4 address"));
    }
    char ip[INET_ADDRSTRLEN] = {0};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr, ip, sizeof(ip));
    freeaddrinfo(found);
    resolved.push_back(absl::StrCat(ip, ":", port));
  }
  args.SetServiceConfigJSON(InferenceServiceConfig(/*health_checks=*/!in_order));
  // TLS checks one name per channel: the first address's host. The certificates of the nodes
  // behind one list must all carry it (`kennelctl certs issue --host`).
  args.SetSslTargetNameOverride(list[0].substr(0, list[0].rfind(':')));
  return grpc::CreateCustomChannel(absl::StrCat("ipv4:", absl::StrJoin(resolved, ",")), *credentials, args);
}

LoadReport RunLoad(const LoadOptions& options, int64_t payload_count,
                   const std::function<const std::string&(int64_t)>& payload,
                   const std::function<void(int64_t, const v1::ClassifyResponse&)>& on_response) {
  // One connection per worker, as independent clients would have.
  State s(options, payload_count, payload, on_response);
  std::vector<std::unique_ptr<WorkerChannel>> channels;
  for (int c = 0; c < options.concurrency; ++c) {
    std::unique_ptr<v1::Inference::Stub> stub;
    if (options.follow == nullptr) {
      grpc::ChannelArguments args;
      args.SetInt("kennel.client", c);  // Distinct args => distinct subchannels.
      auto channel = InferenceChannel(options.server, args);
      if (!channel.ok()) {
        LoadReport report;
        report.errors[absl::StatusCodeToString(channel.status().code())] = 1;
        report.error = std::string(channel.status().message());
        return report;
      }
      stub = v1::Inference::NewStub(*channel);
    }
    channels.push_back(std::make_unique<WorkerChannel>(s, c, std::move(stub)));
  }
  s.start = absl::Now();
  s.end = s.start + options.duration;
  std::vector<std::thread> workers;
  for (int c = 0; c < options.concurrency; ++c) {
    workers.emplace_back([&, c] { options.unary ? UnaryWorker(s, *channels[c]) : StreamWorker(s, *channels[c]); });
  }
  for (auto& w : workers) w.join();
  LoadReport report;
  report.seconds = absl::ToDoubleSeconds(absl::Now() - s.start);
  absl::MutexLock lock(&s.mu);
  // Retries the run ended before sending again: they failed.
  for (const auto& r : s.retries) {
    (void)r;
    s.errors["UNAVAILABLE"]++;
  }
  s.retries.clear();
  report.sent = s.sent;
  report.stream_restarts = s.restarts;
  report.stream_moves = s.moves;
  report.ok = static_cast<int64_t>(s.latencies_ms.size());
  report.errors = s.errors;
  report.throughput = report.seconds > 0 ? static_cast<double>(report.ok) / report.seconds : 0;
  report.mean_batch = report.ok > 0 ? static_cast<double>(s.batch_sum) / static_cast<double>(report.ok) : 0;
  report.p50_ms = Percentile(s.latencies_ms, 0.50);
  report.p90_ms = Percentile(s.latencies_ms, 0.90);
  report.p99_ms = Percentile(s.latencies_ms, 0.99);
  report.max_ms = s.latencies_ms.empty() ? 0 : *std::max_element(s.latencies_ms.begin(), s.latencies_ms.end());
  return report;
}

}  // namespace kennel::cli
