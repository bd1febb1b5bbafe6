#include "cli/endpoint_watch.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/client.h"

namespace kennel::cli {

absl::StatusOr<std::unique_ptr<EndpointWatch>> EndpointWatch::Start(const std::string& coordinator,
                                                                   const std::string& model) {
  std::unique_ptr<EndpointWatch> w(new EndpointWatch(coordinator, model));
  w->thread_ = std::thread([p = w.get()] { p->Loop(); });
  absl::Status failed;
  {
    absl::MutexLock lock(&w->mu_);
    auto ready = [p = w.get()]() ABSL_SHARED_LOCKS_REQUIRED(p->mu_) { return p->revision_ >= 0 || !p->error_.empty(); };
    w->mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(30));
    if (w->revision_ < 0) {
      failed = absl::UnavailableError(absl::StrCat("cannot watch the endpoints of model ", model, " at ", coordinator,
                                                   ": ", w->error_.empty() ? "no answer within 30 s" : w->error_));
    } else if (w->servers_.empty()) {
      failed = absl::NotFoundError(
          absl::StrCat("no inference node serves model '", model, "' now (kennelctl status; kennelctl autoscale)"));
    }
  }
  if (!failed.ok()) return failed;  // The destructor stops the thread.
  return w;
}

EndpointWatch::~EndpointWatch() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

std::pair<std::string, int64_t> EndpointWatch::Current() {
  absl::MutexLock lock(&mu_);
  return {servers_, revision_};
}

void EndpointWatch::Loop() {
  auto stub = AdminStub(coordinator_);
  while (true) {
    grpc::ClientContext context;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      context_ = &context;
    }
    v1::WatchEndpointsRequest request;
    request.set_model(model_);
    request.set_watch(true);
    auto reader = stub->WatchEndpoints(&context, request);
    v1::Endpoints e;
    while (reader->Read(&e)) {
      std::vector<std::string> addresses;
      for (const auto& ep : e.endpoints()) addresses.push_back(ep.address());
      absl::MutexLock lock(&mu_);
      servers_ = absl::StrJoin(addresses, ",");
      // Revisions are the coordinator's; one after a reconnect may repeat an old one, so ours
      // counts the sets seen.
      ++revision_;
      changes_.fetch_add(1);
    }
    grpc::Status status = reader->Finish();
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    if (stop_) return;
    if (!status.ok()) error_ = std::string(RpcError(status, Peer::kCoordinator, coordinator_).message());
    if (revision_ < 0 && status.error_code() != grpc::StatusCode::UNAVAILABLE) return;  // Refused: say so.
    // Broken (a coordinator restart): keep the last set, try again.
    mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Seconds(1));
  }
}

}  // namespace kennel::cli
