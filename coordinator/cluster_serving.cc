// The cluster's serving side: deploys to inference nodes, and what the autoscaler sees and
// asks of them (ServingFleet).
#include "core/logging.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/cluster.h"
#include "core/model_spec.h"
#include "core/status_macros.h"

namespace kennel::coordinator {
namespace v1 = kennel::v1;

absl::StatusOr<v1::DeployResponse> Cluster::Deploy(const v1::DeployRequest& request) {
  ASSIGN_OR_RETURN(const int64_t version, deployments_.ChooseVersion(request));
  std::vector<std::string> targets;
  {
    absl::MutexLock lock(&mu_);
    if (request.nodes().empty()) {
      for (const auto& [name, node] : nodes_) {
        if (node.status.role() == v1::INFERENCE && node.channel) targets.push_back(name);
      }
      if (targets.empty()) return absl::FailedPreconditionError("no inference nodes are connected");
    } else {
      for (const auto& name : request.nodes()) {
        auto it = nodes_.find(name);
        if (it == nodes_.end() || it->second.status.role() != v1::INFERENCE) {
          return absl::NotFoundError(absl::StrCat("no inference node named '", name, "'"));
        }
        if (!it->second.channel) return absl::UnavailableError(absl::StrCat("inference node ", name, " is not connected"));
        targets.push_back(name);
      }
    }
    deployments_.Expect(targets, request.name(), version);
    v1::CoordinatorMessage message;
    message.mutable_deploy()->set_name(request.name());
    message.mutable_deploy()->set_version(version);
    for (const auto& name : targets) {
      Node& node = nodes_[name];
      node.channel->Send(message);
      // Wanted there from now on: a restarted node is sent it again.
      node.status.set_desired_model(absl::StrCat(request.name(), ":", version));
      writer_->SaveNode(node.status);
    }
  }
  LOG(INFO) << "deploying " << request.name() << " version " << version << " to " << absl::StrJoin(targets, ", ");
  v1::DeployResponse response;
  response.set_name(request.name());
  response.set_version(version);
  for (auto& r : deployments_.Collect(targets, request.name(), version,
                                      absl::Seconds(request.timeout_s() > 0 ? request.timeout_s() : 300))) {
    *response.add_results() = std::move(r);
  }
  return response;
}

std::vector<InferenceNodeView> Cluster::InferenceNodes() {
  absl::MutexLock lock(&mu_);
  std::vector<InferenceNodeView> out;
  for (const auto& [name, node] : nodes_) {
    if (node.status.role() != v1::INFERENCE) continue;
    out.push_back({.name = name,
                   .address = node.status.address(),
                   .model = node.status.model(),
                   .desired_model = node.status.desired_model(),
                   .connected = node.channel != nullptr,
                   .serving = node.status.serving(),
                   .draining = node.status.draining(),
                   .load = node.status.load()});
  }
  return out;
}

absl::Status Cluster::Retire(const std::string& name, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(name);
  if (it == nodes_.end() || it->second.status.role() != v1::INFERENCE) {
    return absl::NotFoundError(absl::StrCat("no inference node named '", name, "'"));
  }
  Node& node = it->second;
  if (!node.channel) return absl::UnavailableError(absl::StrCat("inference node ", name, " is not connected"));
  v1::CoordinatorMessage message;
  message.mutable_retire()->set_reason(reason);
  node.channel->Send(message);
  // It leaves for good: a node of that name that comes back later is sent nothing.
  node.status.clear_desired_model();
  node.status.set_detail(absl::StrCat("retiring: ", reason));
  writer_->SaveNode(node.status);
  LOG(INFO) << "retiring inference node " << name << ": " << reason;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Cluster::VersionToServe(const std::string& model) {
  {
    absl::MutexLock lock(&mu_);
    int64_t newest_deployed = 0;
    for (const auto& [name, node] : nodes_) {
      const auto desired = core::ParseModelRef(node.status.desired_model());
      if (desired && desired->name == model) newest_deployed = std::max(newest_deployed, desired->version);
    }
    if (newest_deployed > 0) return newest_deployed;
  }
  v1::DeployRequest request;
  request.set_name(model);
  return deployments_.ChooseVersion(request);
}

}  // namespace kennel::coordinator
