// The load generator behind kennelctl bench and the demo: C concurrent ClassifyStream streams
// (or unary callers), closed loop with `depth` requests in flight per stream or open loop at
// a target total rate, for a fixed duration or request count. Latency is measured by the
// client from send to response.
#ifndef KENNEL_CLI_LOAD_GENERATOR_H_
#define KENNEL_CLI_LOAD_GENERATOR_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kennel/v1/inference.grpc.pb.h"

namespace kennel::cli {

// A channel to one inference node ("host:port") or several ("host:port,host:port"): then
// calls are spread round robin over the nodes that pass gRPC health checks, and a unary
// Classify that fails with UNAVAILABLE (a node gone mid-call) is retried on another, up to 3
// attempts. `args` come on top. INVALID_ARGUMENT for an address list it cannot resolve.
// `in_order`: with several nodes, use the first that can be reached (gRPC's pick_first) instead
// of round robin: a caller that rotates the list per connection spreads its streams evenly (round
// robin starts each new channel at a random node, so few long-lived streams may all land on one).
absl::StatusOr<std::shared_ptr<grpc::Channel>> InferenceChannel(const std::string& servers,
                                                                grpc::ChannelArguments args = {},
                                                                bool in_order = false);

// The service config behind it (for clients in other languages: see the README).
std::string InferenceServiceConfig(bool health_checks);

// The inference nodes a client spreads its requests over, as they change (kennelctl --model:
// the coordinator's WatchEndpoints). Thread-safe.
class EndpointSource {
 public:
  virtual ~EndpointSource() = default;
  // "host:port,host:port,..." now ("" while no node serves), and its revision, which grows with
  // every change.
  virtual std::pair<std::string, int64_t> Current() = 0;
};

struct LoadOptions {
  // One inference node or a comma-separated list (see InferenceChannel).
  std::string server;
  // When set, `server` is ignored: requests follow the source's set. A stream that sees the set
  // change sends nothing more, takes its answers, ends, and is opened again on the new set (no
  // request is cut off by a node leaving it); unary calls go to the set of their time.
  EndpointSource* follow = nullptr;
  int concurrency = 8;
  int depth = 4;           // Closed loop: requests in flight per stream.
  double rate = 0;         // > 0: open loop at this many requests/s in total.
  absl::Duration duration = absl::Seconds(10);
  int64_t max_requests = 0;  // > 0: stop after this many (the demo sends each image once).
  bool unary = false;
  int top_k = 1;
  absl::Duration deadline = absl::Seconds(30);
};

struct LoadReport {
  int64_t sent = 0;
  int64_t ok = 0;
  std::map<std::string, int64_t> errors;  // By status code name.
  int64_t failed() const;                 // Sum of errors.
  // Streams that broke before the run ended and were opened again (after a short backoff).
  int64_t stream_restarts = 0;
  // Streams ended and opened again because the endpoint set changed (LoadOptions.follow).
  int64_t stream_moves = 0;
  std::string error;  // Why nothing could be sent (a bad address list), when that is so.
  double seconds = 0;                     // How long the run really took.
  double throughput = 0;                  // OK responses per second.
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0;
  double mean_batch = 0;                  // Mean server batch size seen.
  double accuracy = -1;                   // Top-1 accuracy of the answers, where the caller knew labels.
};

// A stream that breaks (the node restarted, a connection reset) is opened again after a
// backoff while the run lasts; its unanswered requests count as errors. Unary callers back
// off after UNAVAILABLE instead of spinning.
// Request i sends `payload(i % payload_count)`; `on_response(i, response)` sees every
// successful response to request i (e.g. to score accuracy), from any of RunLoad's threads.
LoadReport RunLoad(const LoadOptions& options, int64_t payload_count,
                   const std::function<const std::string&(int64_t)>& payload,
                   const std::function<void(int64_t, const kennel::v1::ClassifyResponse&)>& on_response = nullptr);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_LOAD_GENERATOR_H_
