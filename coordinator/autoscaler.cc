#include "coordinator/autoscaler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kennel::coordinator {
namespace v1 = kennel::v1;

double AutoscaleRule::MeanSince(absl::Time from) const {
  double sum = 0;
  int n = 0;
  for (auto it = loads_.rbegin(); it != loads_.rend() && it->first > from; ++it) {
    sum += it->second;
    ++n;
  }
  return n == 0 ? 0 : sum / n;
}

ScaleDecision AutoscaleRule::Decide(absl::Time now, const std::vector<ScaledNode>& nodes, int max_grow) {
  const double target = spec_.target();
  const absl::Duration stable = absl::Seconds(spec_.stable_window_s());
  auto need = [&](double load) { return std::max(0, static_cast<int>(std::ceil(load / target - 1e-9))); };
  int serving = 0, starting = 0, leaving = 0;
  double total = 0;
  for (const auto& n : nodes) {
    switch (n.phase) {
      case ScaledNode::Phase::kServing:
        ++serving;
        total += n.load;
        break;
      case ScaledNode::Phase::kStarting:
        ++starting;
        break;
      case ScaledNode::Phase::kLeaving:
        ++leaving;
        break;
    }
  }
  // Loads are recorded only while some node serves and reports: no node, no measurement (a
  // zero would read as an idle model).
  if (serving > 0) {
    loads_.emplace_back(now, total);
    first_sample_ = std::min(first_sample_, now);
  }
  while (!loads_.empty() && loads_.front().first <= now - stable) loads_.pop_front();
  load_ = serving > 0 ? total : 0;
  recent_ = MeanSince(now - kDecisionWindow);
  if (serving > 0) recents_.emplace_back(now, recent_);
  while (!recents_.empty() && recents_.front().first <= now - stable) recents_.pop_front();

  if (serving > 0 && recent_ >= spec_.panic_threshold() * target * serving) {
    panic_ = true;
    panic_until_ = now + stable;
  } else if (panic_ && now >= panic_until_) {
    panic_ = false;
  }

  const int provisioned = serving + starting;
  ScaleDecision d;
  int want = provisioned;
  std::string why;
  if (serving > 0) {
    want = need(recent_);
    why = absl::StrFormat("load %.2f over the last second on %d serving node%s (target %.2f per node)", recent_,
                          serving, serving == 1 ? "" : "s", target);
    if (panic_) {
      const double panic_load = MeanSince(now - absl::Seconds(spec_.panic_window_s()));
      want = std::max({want, need(panic_load), provisioned});
      why = absl::StrFormat("panic: load %.2f over the last second, %.2f over the panic window, on %d serving node%s "
                            "(target %.2f per node)",
                            recent_, panic_load, serving, serving == 1 ? "" : "s", target);
    }
  }
  if (want < spec_.min_nodes()) {
    want = spec_.min_nodes();
    if (provisioned < want) why = absl::StrCat("fewer nodes (", provisioned, ") than min ", spec_.min_nodes());
  }
  want = std::min(want, spec_.max_nodes());

  if (want > provisioned) {
    d.desired = want;
    d.add = std::min(want - provisioned, max_grow);
    if (d.add > 0) {
      d.action = ScaleDecision::Action::kScaleOut;
      d.reason = absl::StrCat("scale out ", provisioned, " -> ", provisioned + d.add, ": ", why);
    }
  } else if (!panic_ && starting == 0 && leaving == 0 && provisioned > spec_.min_nodes() &&
             first_sample_ <= now - stable && !recents_.empty()) {
    double peak = 0;
    for (const auto& [t, r] : recents_) peak = std::max(peak, r);
    if (need(peak) < provisioned) {
      const ScaledNode* pick = nullptr;
      for (const auto& n : nodes) {
        if (n.phase != ScaledNode::Phase::kServing) continue;
        if (pick == nullptr || n.load < pick->load || (n.load == pick->load && n.since > pick->since)) pick = &n;
      }
      if (pick != nullptr) {
        d.action = ScaleDecision::Action::kScaleIn;
        d.desired = provisioned - 1;
        d.remove = pick->name;
        d.reason = absl::StrFormat(
            "scale in %d -> %d (%s, the least loaded): the load was at most %.2f for the last %s (target %.2f "
            "per node)",
            provisioned, provisioned - 1, pick->name, peak, absl::FormatDuration(stable), target);
      }
    }
  }
  if (d.desired == 0) d.desired = std::max(provisioned, want);
  desired_ = d.desired;
  return d;
}

}  // namespace kennel::coordinator
