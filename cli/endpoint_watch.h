// The endpoint set of a model as the coordinator streams it (WatchEndpoints), for kennelctl
// classify and bench --model: a thread reads the stream (reconnecting after a break, keeping
// the last set meanwhile) and LoadOptions.follow reads the set.
#ifndef KENNEL_CLI_ENDPOINT_WATCH_H_
#define KENNEL_CLI_ENDPOINT_WATCH_H_

#include <grpcpp/client_context.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cli/load_generator.h"

namespace kennel::cli {

class EndpointWatch : public EndpointSource {
 public:
  // Waits for the model's first set: NOT_FOUND when no node serves it, the coordinator's
  // error when it cannot answer.
  static absl::StatusOr<std::unique_ptr<EndpointWatch>> Start(const std::string& coordinator, const std::string& model);
  ~EndpointWatch() override;

  std::pair<std::string, int64_t> Current() override;
  int changes() const { return changes_.load(); }

 private:
  EndpointWatch(std::string coordinator, std::string model) : coordinator_(std::move(coordinator)), model_(std::move(model)) {}
  void Loop();

  const std::string coordinator_;
  const std::string model_;
  absl::Mutex mu_;
  std::string servers_ ABSL_GUARDED_BY(mu_);
  int64_t revision_ ABSL_GUARDED_BY(mu_) = -1;
  std::string error_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::atomic<int> changes_{0};
  std::thread thread_;
};

}  // namespace kennel::cli

#endif  // KENNEL_CLI_ENDPOINT_WATCH_H_
