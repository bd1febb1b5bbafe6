#include "coordinator/deployments.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kennel::coordinator {

absl::StatusOr<int64_t> Deployments::ChooseVersion(const v1::DeployRequest& request) {
  if (!(request.min_accuracy() >= 0 && request.min_accuracy() <= 1)) {
    return absl::InvalidArgumentError("min_accuracy must be in [0, 1]");
  }
  ASSIGN_OR_RETURN(auto versions, state_->LoadModels(request.name()));
  if (versions.empty()) return absl::NotFoundError(absl::StrCat("no model named '", request.name(), "'"));
  int64_t version = request.version();
  if (version <= 0) {
    // The newest version fit to serve: finite metrics, and as accurate as asked.
    for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
      const auto& m = it->manifest().metrics();
      const bool finite = std::isfinite(m.train_loss()) && std::isfinite(m.test_loss()) &&
                          std::isfinite(m.test_accuracy());
      const bool accurate = request.min_accuracy() <= 0 ||
                            (!it->manifest().lineage().imported() && m.test_accuracy() >= request.min_accuracy());
      if (finite && accurate) return it->version();
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "no version of ", request.name(), " is fit to deploy (", versions.size(), " versions; none with finite "
        "metrics", request.min_accuracy() > 0 ? absl::StrCat(" and test accuracy >= ", request.min_accuracy()) : "",
        "); name one with --version to deploy it anyway"));
  }
  if (std::none_of(versions.begin(), versions.end(), [&](const auto& m) { return m.version() == version; })) {
    return absl::NotFoundError(absl::StrCat("model ", request.name(), " has no version ", version));
  }
  return version;
}

std::string Deployments::Key(const std::string& node, const std::string& name, int64_t version) {
  return absl::StrCat(node, "/", name, "/", version);
}

void Deployments::Expect(const std::vector<std::string>& nodes, const std::string& name, int64_t version) {
  absl::MutexLock lock(&mu_);
  for (const auto& node : nodes) results_.erase(Key(node, name, version));
}

void Deployments::OnResult(const std::string& node, const std::string& name, int64_t version,
                           const std::string& error) {
  absl::MutexLock lock(&mu_);
  results_[Key(node, name, version)] = error;
}

std::vector<v1::NodeDeployResult> Deployments::Collect(const std::vector<std::string>& nodes,
                                                       const std::string& name, int64_t version,
                                                       absl::Duration timeout) {
  std::vector<std::string> keys;
  for (const auto& node : nodes) keys.push_back(Key(node, name, version));
  absl::MutexLock lock(&mu_);
  auto all_answered = [this, &keys]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return std::all_of(keys.begin(), keys.end(), [this](const std::string& k) { return results_.contains(k); });
  };
  mu_.AwaitWithTimeout(absl::Condition(&all_answered), timeout);
  std::vector<v1::NodeDeployResult> out;
  for (size_t i = 0; i < nodes.size(); ++i) {
    v1::NodeDeployResult& r = out.emplace_back();
    r.set_node(nodes[i]);
    auto it = results_.find(keys[i]);
    if (it == results_.end()) {
      r.set_error("no answer before the timeout");
    } else {
      r.set_ok(it->second.empty());
      r.set_error(it->second);
      results_.erase(it);
    }
  }
  return out;
}

}  // namespace kennel::coordinator
