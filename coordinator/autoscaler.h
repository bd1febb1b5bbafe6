// The autoscaling rule for one model's inference nodes, free of processes, gRPC and clocks:
// loads in, decisions out (Autoscaling, in autoscaling.h, applies them to the cluster).
//
// The signal is each serving node's offered load (NodeLoad.offered_load: busy fraction x
// arrivals / completions, so 1.0 = one node's capacity whatever the model's speed). Unlike
// concurrency (requests in flight), it does not grow with the backlog an overload piles up
// while a new node starts, so one overload is answered with the nodes it needs, not more.
// Every tick the rule records the serving nodes' total load L and its mean over the last
// second, R, and then:
//   - scale out at once to ceil(R / target) nodes when the serving and starting nodes are
//     fewer (the load is the same whatever the node count, so nodes still starting are counted
//     and no more are asked for while they come up);
//   - panic when R >= panic_threshold x target x serving nodes: the panic window's mean load
//     also counts, and nothing is removed until the stable window passed without panic;
//   - scale in one node at a time, when the stable window is full, no node is starting or
//     leaving, and every R of the window would have fit on one node fewer: the node removed is
//     the least loaded serving one (never one that is still loading or warming up);
//   - keep min_nodes <= nodes <= max_nodes.
// Thread-compatible.
#ifndef KENNEL_COORDINATOR_AUTOSCALER_H_
#define KENNEL_COORDINATOR_AUTOSCALER_H_

#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/autoscale_spec.h"
#include "kennel/v1/autoscale.pb.h"

namespace kennel::coordinator {

using core::CheckAutoscaleSpec;

struct ScaledNode {
  enum class Phase { kStarting, kServing, kLeaving };
  std::string name;
  Phase phase = Phase::kStarting;
  double load = 0;  // Serving nodes: the offered load of their latest report.
  absl::Time since;  // When it entered its phase.
};

struct ScaleDecision {
  enum class Action { kNone, kScaleOut, kScaleIn };
  Action action = Action::kNone;
  int desired = 0;
  int add = 0;         // kScaleOut: nodes to start.
  std::string remove;  // kScaleIn: the node to retire.
  std::string reason;  // In words, with the figures that decided it.
};

class AutoscaleRule {
 public:
  // The window the scale-out load R is averaged over.
  static constexpr absl::Duration kDecisionWindow = absl::Seconds(1);

  // `spec` as core::CheckAutoscaleSpec returns it.
  explicit AutoscaleRule(kennel::v1::AutoscaleSpec spec) : spec_(std::move(spec)) {}
  void set_spec(kennel::v1::AutoscaleSpec spec) { spec_ = std::move(spec); }
  const kennel::v1::AutoscaleSpec& spec() const { return spec_; }

  // One tick, with the model's nodes now. `max_grow`: how many more nodes may be started at
  // most (the caller's limit after failed starts; the rule says so in its reason).
  ScaleDecision Decide(absl::Time now, const std::vector<ScaledNode>& nodes, int max_grow = 1 << 20);

  bool panic() const { return panic_; }
  double load() const { return load_; }      // L of the last tick.
  double recent() const { return recent_; }  // R of the last tick.
  int desired() const { return desired_; }

 private:
  double MeanSince(absl::Time from) const;

  kennel::v1::AutoscaleSpec spec_;
  std::deque<std::pair<absl::Time, double>> loads_;    // L per tick, within the stable window.
  std::deque<std::pair<absl::Time, double>> recents_;  // R per tick, within the stable window.
  absl::Time first_sample_ = absl::InfiniteFuture();
  absl::Time panic_until_ = absl::InfinitePast();
  bool panic_ = false;
  double load_ = 0;
  double recent_ = 0;
  int desired_ = 0;
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_AUTOSCALER_H_
