#include "cli/console_server.h"

#include <httplib.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "cli/client.h"
#include "cli/console_assets.h"
#include "cli/load_generator.h"
#include "cli/output.h"
#include "kennel/v1/inference.grpc.pb.h"

namespace kennel::cli {

const char kConsoleContentSecurityPolicy[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

int CheckConsoleRequest(absl::string_view method, absl::string_view host, int port) {
  if (method != "GET" && method != "HEAD") return 405;
  const std::string suffix = absl::StrCat(":", port);
  if (host != absl::StrCat("127.0.0.1", suffix) && host != absl::StrCat("localhost", suffix)) return 403;
  return 0;
}

namespace {

constexpr int kCoordinatorDeadlineS = 5;
constexpr int kNodeDeadlineS = 2;

int HttpStatusFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::CANCELLED:  // A coordinator that stops ends its calls so.
      return 503;
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return 403;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    default:
      return 502;
  }
}

// What a failed call says to the page: the code's name, the words of RpcError and who failed.
nlohmann::json ErrorJson(const grpc::Status& status, Peer peer, const std::string& address) {
  const absl::Status error =
      status.error_code() == grpc::StatusCode::CANCELLED
          ? absl::CancelledError(absl::StrCat(peer == Peer::kCoordinator ? "the coordinator" : "the inference node",
                                              " at ", address, " ended the call (is it stopping?)"))
          : RpcError(status, peer, address);
  return {{"code", absl::StatusCodeToString(error.code())},
          {"message", std::string(error.message())},
          {"peer", peer == Peer::kCoordinator ? "coordinator" : "inference node"},
          {"address", address}};
}

// The cluster's autoscaled models as the page reads them (the rest of the status is not sent).
nlohmann::json AutoscalingJson(const v1::ClusterStatus& status) {
  nlohmann::json models = nlohmann::json::array();
  for (const v1::AutoscaleStatus& model : status.autoscaling()) models.push_back(ProtoToJson(model));
  return models;
}

}  // namespace

class ConsoleServer::Impl {
 public:
  explicit Impl(const ConsoleOptions& options) : options_(options), admin_(AdminStub(options.coordinator)) {}

  ~Impl() {
    http_.stop();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Listen() {
    // httplib's default also sets SO_REUSEPORT, which lets a second server of the same user
    // bind the same port beside this one (a second kennelctl ui would start "fine" and take
    // half the connections): only SO_REUSEADDR, for a quick restart.
    http_.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      SetCommonHeaders(res);
      const int refused = CheckConsoleRequest(req.method, req.get_header_value("Host"), port_);
      if (refused == 0) return httplib::Server::HandlerResponse::Unhandled;
      res.status = refused;
      if (refused == 405) res.set_header("Allow", "GET, HEAD");
      res.set_content(refused == 405 ? "405: kennelctl ui is read-only (GET and HEAD only)\n"
                                     : "403: this console answers only to http://127.0.0.1:" + std::to_string(port_) +
                                           "/ (the Host header named another address)\n",
                      "text/plain; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    });
    http_.Get("/api/cluster", [this](const httplib::Request&, httplib::Response& res) { Cluster(res); });
    http_.Get("/api/jobs", [this](const httplib::Request&, httplib::Response& res) { Jobs(res); });
    http_.Get(R"(/api/jobs/([A-Za-z0-9_.:-]+))", [this](const httplib::Request& req, httplib::Response& res) {
      Job(req.matches[1].str(), res);
    });
    http_.Get("/api/tunings", [this](const httplib::Request&, httplib::Response& res) { Tunings(res); });
    http_.Get(R"(/api/tunings/([A-Za-z0-9_.:-]+))", [this](const httplib::Request& req, httplib::Response& res) {
      Tuning(req.matches[1].str(), res);
    });
    http_.Get("/api/models", [this](const httplib::Request&, httplib::Response& res) { Models(res); });
    http_.Get("/api/serving", [this](const httplib::Request&, httplib::Response& res) { Serving(res); });
    http_.Get("/api/console", [this](const httplib::Request&, httplib::Response& res) { Console(res); });
    http_.Get(R"(/api/.*)", [](const httplib::Request& req, httplib::Response& res) {
      Reply(res, {{"error", {{"code", "NOT_FOUND"}, {"message", absl::StrCat("the console has no ", req.path)},
                             {"peer", "console"}}}},
            404);
    });
    http_.Get(R"(/.*)", [](const httplib::Request& req, httplib::Response& res) {
      const ConsoleAsset* asset = FindConsoleAsset(req.path == "/" ? "/index.html" : req.path);
      if (asset == nullptr) {
        res.status = 404;
        res.set_content("404: no such page\n", "text/plain; charset=utf-8");
        return;
      }
      res.set_content(reinterpret_cast<const char*>(asset->data), asset->size, asset->content_type);
    });
    errno = 0;
    const int bound = options_.port == 0 ? http_.bind_to_any_port("127.0.0.1")
                                         : (http_.bind_to_port("127.0.0.1", options_.port) ? options_.port : -1);
    if (bound <= 0) {
      const int error = errno;
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot listen on 127.0.0.1:", options_.port, ": ",
          error == EADDRINUSE ? absl::StrCat("port ", options_.port, " is in use (another kennelctl ui?)")
                              : (error != 0 ? std::strerror(error) : "refused"),
          "; choose another port with --port (0: any free one)"));
    }
    port_ = bound;
    thread_ = std::thread([this] { http_.listen_after_bind(); });
    return absl::OkStatus();
  }

  int port() const { return port_; }

 private:
  static void SetCommonHeaders(httplib::Response& res) {
    res.set_header("Content-Security-Policy", kConsoleContentSecurityPolicy);
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_header("Cache-Control", "no-store");
  }

  static void Reply(httplib::Response& res, const nlohmann::json& body, int status = 200) {
    res.status = status;
    res.set_content(body.dump(), "application/json");
  }

  void Count(const char* method) {
    absl::MutexLock lock(&mu_);
    ++calls_[method];
  }

  // One Admin call (`rpc`, counted as `method`): true with `response` filled, or false with the
  // error written to `res`.
  template <typename Request, typename Response>
  bool Call(const char* method,
            grpc::Status (v1::Admin::Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
            const Request& request, Response* response, httplib::Response& res) {
    Count(method);
    auto context = Context(kCoordinatorDeadlineS);
    const grpc::Status status = (admin_.get()->*rpc)(context.get(), request, response);
    if (status.ok()) return true;
    Reply(res, {{"error", ErrorJson(status, Peer::kCoordinator, options_.coordinator)}},
          HttpStatusFor(status.error_code()));
    return false;
  }

  // An Admin call whose answer is the page's answer, as it is.
  template <typename Request, typename Response>
  void Relay(const char* method,
             grpc::Status (v1::Admin::Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
             const Request& request, httplib::Response& res) {
    Response response;
    if (Call(method, rpc, request, &response, res)) Reply(res, Stamped(ProtoToJson(response)));
  }

  bool ClusterStatus(v1::ClusterStatus* status, httplib::Response& res) {
    return Call("GetClusterStatus", &v1::Admin::Stub::GetClusterStatus, v1::GetClusterStatusRequest(), status, res);
  }

  void Cluster(httplib::Response& res) {
    Relay("GetClusterStatus", &v1::Admin::Stub::GetClusterStatus, v1::GetClusterStatusRequest(), res);
  }

  void Jobs(httplib::Response& res) {
    v1::ListJobsRequest request;
    request.set_limit(200);
    Relay("ListJobs", &v1::Admin::Stub::ListJobs, request, res);
  }

  void Job(const std::string& id, httplib::Response& res) {
    v1::GetJobRequest request;
    request.set_job_id(id);
    Relay("GetJob", &v1::Admin::Stub::GetJob, request, res);
  }

  void Tunings(httplib::Response& res) {
    v1::ListTuningsRequest request;
    request.set_limit(200);
    Relay("ListTunings", &v1::Admin::Stub::ListTunings, request, res);
  }

  void Tuning(const std::string& id, httplib::Response& res) {
    v1::GetTuningRequest request;
    request.set_tuning_id(id);
    Relay("GetTuning", &v1::Admin::Stub::GetTuning, request, res);
  }

  // The versions, and the nodes that serve each (from the cluster's inference nodes).
  void Models(httplib::Response& res) {
    v1::ListModelsResponse models;
    if (!Call("ListModels", &v1::Admin::Stub::ListModels, v1::ListModelsRequest(), &models, res)) return;
    v1::ClusterStatus status;
    if (!ClusterStatus(&status, res)) return;
    nlohmann::json body = ProtoToJson(models);
    nlohmann::json nodes = nlohmann::json::array();
    for (const v1::NodeStatus& node : status.nodes()) {
      if (node.role() != v1::INFERENCE) continue;
      nodes.push_back({{"name", node.name()},
                       {"model", node.model()},
                       {"desired_model", node.desired_model()},
                       {"serving", node.serving()},
                       {"state", v1::NodeState_Name(node.state())}});
    }
    body["inference_nodes"] = std::move(nodes);
    body["autoscaling"] = AutoscalingJson(status);
    Reply(res, Stamped(std::move(body)));
  }

  // Each inference node's load (from the coordinator's view) and its counters (from the node).
  void Serving(httplib::Response& res) {
    v1::ClusterStatus status;
    if (!ClusterStatus(&status, res)) return;
    nlohmann::json nodes = nlohmann::json::array();
    for (const v1::NodeStatus& node : status.nodes()) {
      if (node.role() != v1::INFERENCE) continue;
      nlohmann::json entry = {{"name", node.name()},
                              {"address", node.address()},
                              {"state", v1::NodeState_Name(node.state())},
                              {"serving", node.serving()},
                              {"draining", node.draining()},
                              {"model", node.model()},
                              {"load", ProtoToJson(node.load())}};
      if (node.state() != v1::DEAD && !node.address().empty()) {
        v1::ServingStats stats;
        const grpc::Status rpc = NodeStats(node.address(), &stats);
        if (rpc.ok()) {
          entry["stats"] = ProtoToJson(stats);
        } else {
          entry["stats_error"] = ErrorJson(rpc, Peer::kInferenceNode, node.address());
        }
      }
      nodes.push_back(std::move(entry));
    }
    Reply(res, Stamped({{"nodes", std::move(nodes)}, {"autoscaling", AutoscalingJson(status)}}));
  }

  grpc::Status NodeStats(const std::string& address, v1::ServingStats* stats) {
    v1::Inference::Stub* stub = nullptr;
    {
      Count("GetServingStats");
      absl::MutexLock lock(&mu_);
      auto& slot = nodes_[address];
      if (slot == nullptr) {
        auto channel = InferenceChannel(address);
        if (!channel.ok()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(channel.status().message()));
        slot = v1::Inference::NewStub(*channel);
      }
      stub = slot.get();  // Stubs are never removed: the pointer stays valid.
    }
    auto context = Context(kNodeDeadlineS);
    return stub->GetServingStats(context.get(), v1::GetServingStatsRequest(), stats);
  }

  void Console(httplib::Response& res) {
    absl::MutexLock lock(&mu_);
    nlohmann::json calls = nlohmann::json::object();
    for (const auto& [method, n] : calls_) calls[method] = n;
    Reply(res, {{"coordinator", options_.coordinator},
                {"started_unix_ms", absl::ToUnixMillis(started_)},
                {"now_unix_ms", absl::ToUnixMillis(absl::Now())},
                {"calls", std::move(calls)}});
  }

  // Every answer says when it was read and from which coordinator (the page shows the age of
  // what it keeps while the coordinator is down).
  nlohmann::json Stamped(nlohmann::json body) const {
    body["fetched_unix_ms"] = absl::ToUnixMillis(absl::Now());
    body["coordinator"] = options_.coordinator;
    return body;
  }

  const ConsoleOptions options_;
  const std::unique_ptr<v1::Admin::Stub> admin_;
  const absl::Time started_ = absl::Now();
  httplib::Server http_;
  std::thread thread_;
  int port_ = 0;
  absl::Mutex mu_;
  std::map<std::string, int64_t> calls_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<v1::Inference::Stub>> nodes_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<ConsoleServer>> ConsoleServer::Start(const ConsoleOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  if (absl::Status listening = impl->Listen(); !listening.ok()) return listening;
  return std::unique_ptr<ConsoleServer>(new ConsoleServer(std::move(impl)));
}

ConsoleServer::ConsoleServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ConsoleServer::~ConsoleServer() = default;
int ConsoleServer::port() const { return impl_->port(); }
std::string ConsoleServer::url() const { return absl::StrCat("http://127.0.0.1:", impl_->port(), "/"); }

}  // namespace kennel::cli
