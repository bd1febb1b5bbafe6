// Deploys of registered models to inference nodes: which version rolls out (the one asked for,
// or the newest fit to serve, never a diverged one), and the answers the nodes send back. It
// has its own lock: a deploy waits for its answers (seconds, while nodes load and warm up)
// without holding the cluster's, which only sends the messages and records what each node
// should serve.
//
// Thread-safe.
#ifndef KENNEL_COORDINATOR_DEPLOYMENTS_H_
#define KENNEL_COORDINATOR_DEPLOYMENTS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/state_store.h"
#include "kennel/v1/admin.pb.h"

namespace kennel::coordinator {

class Deployments {
 public:
  explicit Deployments(StateStore* state) : state_(state) {}

  // The version `request` deploys: the one it names, or else the newest with finite metrics
  // and, when it sets min_accuracy, at least that test accuracy (imported models have no
  // test accuracy of Kennel's, so they pass no floor). NOT_FOUND for an unknown model or
  // version, INVALID_ARGUMENT for a floor outside [0, 1], FAILED_PRECONDITION when no
  // version is fit.
  absl::StatusOr<int64_t> ChooseVersion(const kennel::v1::DeployRequest& request);

  // `name` version `version` is about to be sent to `nodes`: their earlier answers to it are
  // forgotten.
  void Expect(const std::vector<std::string>& nodes, const std::string& name, int64_t version);
  // A node's answer: `error` is empty when the model loaded and serves.
  void OnResult(const std::string& node, const std::string& name, int64_t version, const std::string& error);
  // Waits up to `timeout` for every node's answer; one result per node, in order ("no answer
  // before the timeout" for the silent).
  std::vector<kennel::v1::NodeDeployResult> Collect(const std::vector<std::string>& nodes, const std::string& name,
                                                    int64_t version, absl::Duration timeout);

 private:
  static std::string Key(const std::string& node, const std::string& name, int64_t version);

  StateStore* const state_;
  absl::Mutex mu_;
  std::map<std::string, std::string> results_ ABSL_GUARDED_BY(mu_);  // By Key: the error, "" if ok.
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_DEPLOYMENTS_H_
