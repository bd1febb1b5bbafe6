#include "coordinator/autoscaling.h"

#include "core/logging.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/model_spec.h"
#include "core/status_macros.h"

namespace kennel::coordinator {
namespace v1 = kennel::v1;
namespace {

// Start-to-SERVING histogram bounds, seconds.
constexpr double kStartBounds[] = {0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300};

}  // namespace

Autoscaling::Autoscaling(AutoscalingOptions options, StateStore* state, ServingFleet* fleet,
                         std::unique_ptr<NodeProvider> provider)
    : options_(std::move(options)), state_(state), fleet_(fleet), provider_(std::move(provider)),
      start_buckets_(std::size(kStartBounds) + 1, 0) {}

Autoscaling::~Autoscaling() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

absl::Status Autoscaling::Start() {
  ASSIGN_OR_RETURN(auto stored, state_->LoadAutoscale());
  {
    absl::MutexLock lock(&mu_);
    for (auto& s : stored) {
      auto spec = CheckAutoscaleSpec(s.spec());
      if (!spec.ok()) {
        LOG(ERROR) << "autoscaling of " << s.model() << " not resumed: " << spec.status().message();
        continue;
      }
      Model& m = models_.try_emplace(s.model(), *spec).first->second;
      m.version = s.version();
      LOG(INFO) << "autoscaling " << s.model() << " version " << m.version << " resumed: min " << spec->min_nodes()
                << ", max " << spec->max_nodes() << ", target " << spec->target()
                << " (the nodes already serving it are adopted)";
    }
  }
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

std::string Autoscaling::ModelName(const std::string& model_version) {
  const auto ref = core::ParseModelRef(model_version);
  return ref ? ref->name : "";
}

absl::StatusOr<v1::AutoscaleStatus> Autoscaling::Set(const std::string& model, const v1::AutoscaleSpec& spec,
                                                     bool disable) {
  if (model.empty()) return absl::InvalidArgumentError("autoscale: no model named");
  if (disable) {
    RETURN_IF_ERROR(state_->DeleteAutoscale(model));
    absl::MutexLock lock(&mu_);
    auto it = models_.find(model);
    if (it == models_.end()) return absl::NotFoundError(absl::StrCat("model ", model, " is not autoscaled"));
    v1::AutoscaleStatus status = it->second.status;
    status.set_last_decision("autoscaling turned off; the nodes stay");
    models_.erase(it);
    LOG(INFO) << "autoscaling of " << model << " turned off";
    return status;
  }
  ASSIGN_OR_RETURN(v1::AutoscaleSpec checked, CheckAutoscaleSpec(spec));
  int64_t version = checked.version();
  if (version == 0) {
    ASSIGN_OR_RETURN(version, fleet_->VersionToServe(model));
  }
  v1::AutoscaleStatus stored;
  stored.set_model(model);
  *stored.mutable_spec() = checked;
  stored.set_version(version);
  RETURN_IF_ERROR(state_->SaveAutoscale(stored));
  absl::MutexLock lock(&mu_);
  auto [it, added] = models_.try_emplace(model, checked);
  Model& m = it->second;
  m.rule.set_spec(checked);
  m.version = version;
  m.start_failures = 0;  // New settings: try again.
  m.problem.clear();
  Decided(m, absl::StrCat(added ? "autoscaling on" : "settings changed", ": min ", checked.min_nodes(), ", max ",
                          checked.max_nodes(), ", target ", checked.target(), ", version ", version),
          options_.now());
  m.status.set_model(model);
  *m.status.mutable_spec() = checked;
  m.status.set_version(version);
  m.status.set_provider(provider_ ? provider_->name() : "none");
  return m.status;
}

absl::StatusOr<std::vector<v1::AutoscaleStatus>> Autoscaling::Get(const std::string& model) {
  absl::MutexLock lock(&mu_);
  std::vector<v1::AutoscaleStatus> out;
  for (const auto& [name, m] : models_) {
    if (model.empty() || name == model) out.push_back(m.status);
  }
  if (!model.empty() && out.empty()) return absl::NotFoundError(absl::StrCat("model ", model, " is not autoscaled"));
  return out;
}

v1::Endpoints Autoscaling::Endpoints(const std::string& model) {
  absl::MutexLock lock(&mu_);
  auto it = endpoints_.find(model);
  if (it != endpoints_.end()) return it->second.endpoints;
  v1::Endpoints empty;
  empty.set_model(model);
  return empty;
}

v1::Endpoints Autoscaling::WaitForEndpoints(const std::string& model, int64_t seen, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto changed = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    auto it = endpoints_.find(model);
    return stop_ || (it != endpoints_.end() && it->second.endpoints.revision() != seen);
  };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  auto it = endpoints_.find(model);
  if (it != endpoints_.end()) return it->second.endpoints;
  v1::Endpoints empty;
  empty.set_model(model);
  return empty;
}

void Autoscaling::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    mu_.Unlock();
    Tick();
    mu_.Lock();
    mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.tick);
  }
}

void Autoscaling::Tick() {
  // The fleet and the provider are asked outside the lock (they take the cluster's).
  const std::vector<InferenceNodeView> nodes = fleet_->InferenceNodes();
  std::vector<std::pair<std::string, std::string>> ended;
  if (provider_) ended = provider_->Ended();
  const absl::Time now = options_.now();
  absl::MutexLock lock(&mu_);
  for (const auto& [node, how] : ended) {
    for (auto& [name, m] : models_) {
      if (m.launched.erase(node) > 0) {
        ++m.start_failures;
        m.problem = absl::StrCat("node ", node, " ended before it served: ", how, " (", m.start_failures, " of ",
                                 m.rule.spec().max_start_failures(), " failed starts)");
        LOG(WARNING) << "autoscaling " << name << ": " << m.problem;
      }
    }
  }
  for (auto& [name, m] : models_) TickModel(name, m, nodes, now);
  UpdateEndpoints(nodes);
}

std::string Autoscaling::NextNodeName(const std::string& model, const std::vector<InferenceNodeView>& nodes) {
  // Names are never reused while the cluster knows them (a restarted coordinator starts past
  // the numbers its nodes have).
  const std::string prefix = absl::StrCat(model, "-auto-");
  for (const auto& n : nodes) {
    int64_t number = 0;
    if (n.name.rfind(prefix, 0) == 0 && absl::SimpleAtoi(n.name.substr(prefix.size()), &number)) {
      next_node_ = std::max(next_node_, number + 1);
    }
  }
  return absl::StrCat(prefix, next_node_++);
}

void Autoscaling::Decided(Model& m, const std::string& what, absl::Time now) {
  m.last_decision = what;
  m.last_decision_at = now;
  m.status.set_last_decision(what);
  m.status.set_last_decision_unix_ms(absl::ToUnixMillis(now));
  LOG(INFO) << "autoscaling " << m.status.model() << ": " << what;
}

void Autoscaling::TickModel(const std::string& name, Model& m, const std::vector<InferenceNodeView>& nodes,
                            absl::Time now) {
  m.status.set_model(name);
  const v1::AutoscaleSpec& spec = m.rule.spec();
  std::vector<ScaledNode> scaled;
  std::set<std::string> present;
  int draining = 0;
  auto is_ours = [&](const InferenceNodeView& n) {
    return ModelName(n.desired_model) == name || ModelName(n.model) == name || m.launched.contains(n.name);
  };
  // A provider whose nodes cannot be given names (an EC2 Auto Scaling group, `kubectl scale`)
  // starts nodes that register under names of their own: a node of the model seen for the
  // first time takes over the oldest launch that no node has answered yet.
  std::set<std::string> registered;
  for (const auto& n : nodes) registered.insert(n.name);
  for (const auto& n : nodes) {
    if (!is_ours(n) || m.known.contains(n.name)) continue;
    m.known.insert(n.name);
    if (m.launched.contains(n.name)) continue;
    auto oldest = m.launched.end();
    for (auto it = m.launched.begin(); it != m.launched.end(); ++it) {
      if (!registered.contains(it->first) && (oldest == m.launched.end() || it->second.started < oldest->second.started)) {
        oldest = it;
      }
    }
    if (oldest != m.launched.end()) {
      LOG(INFO) << "autoscaling " << name << ": " << n.name << " answers the launch of " << oldest->first;
      m.launched[n.name] = oldest->second;
      m.launched.erase(oldest);
    }
  }
  for (const auto& n : nodes) {
    if (!is_ours(n)) continue;
    present.insert(n.name);
    if (m.retired.contains(n.name)) {
      m.drain_failures[n.name] = std::max(m.drain_failures[n.name], n.load.failed_while_draining());
      if (!n.connected) {
        m.dropped_during_scale_in += m.drain_failures[n.name];
        if (m.drain_failures[n.name] > 0) {
          LOG(WARNING) << "autoscaling " << name << ": " << n.name << " failed " << m.drain_failures[n.name]
                       << " requests while it drained";
        }
        m.drain_failures.erase(n.name);
        // It drained and left: release it.
        m.retired.erase(n.name);
        m.leaving.erase(n.name);
        leaving_.erase(n.name);
        if (provider_) {
          if (absl::Status s = provider_->Stop(n.name); !s.ok()) {
            m.problem = absl::StrCat("stopping ", n.name, ": ", s.message());
            LOG(WARNING) << "autoscaling " << name << ": " << m.problem;
          }
        }
        LOG(INFO) << "autoscaling " << name << ": " << n.name << " has left";
      } else {
        ++draining;
        scaled.push_back({n.name, ScaledNode::Phase::kLeaving, 0, now});
      }
      continue;
    }
    if (m.leaving.contains(n.name)) {
      ++draining;
      scaled.push_back({n.name, ScaledNode::Phase::kLeaving, 0, now});
      if (now - m.leaving[n.name] >= options_.retire_delay) {
        if (absl::Status s = fleet_->Retire(n.name, m.last_decision); !s.ok()) {
          LOG(WARNING) << "autoscaling " << name << ": retiring " << n.name << ": " << s.message();
        }
        m.retired.insert(n.name);  // Stopped once its stream closes (or now, if it already has).
      }
      continue;
    }
    if (!n.connected) {
      if (auto it = m.launched.find(n.name); it != m.launched.end()) {
        scaled.push_back({n.name, ScaledNode::Phase::kStarting, 0, it->second.started});
      }
      continue;  // A dead node that we did not start is no capacity.
    }
    const bool serves = n.serving && !n.draining && ModelName(n.model) == name;
    if (serves) {
      if (auto it = m.launched.find(n.name); it != m.launched.end()) {
        const double seconds = absl::ToDoubleSeconds(now - it->second.started);
        int b = 0;
        while (b < static_cast<int>(std::size(kStartBounds)) && seconds > kStartBounds[b]) ++b;
        ++start_buckets_[b];
        start_sum_ += seconds;
        ++start_count_;
        LOG(INFO) << "autoscaling " << name << ": " << n.name << " SERVING " << absl::StrFormat("%.2f", seconds)
                  << " s after its start";
        m.launched.erase(it);
        m.start_failures = 0;
        m.problem.clear();
      }
      scaled.push_back({n.name, ScaledNode::Phase::kServing, n.load.offered_load(), now});
    } else if (n.draining) {
      ++draining;
      scaled.push_back({n.name, ScaledNode::Phase::kLeaving, 0, now});
    } else {
      // Registered, loading or warming its model.
      auto it = m.launched.find(n.name);
      scaled.push_back({n.name, ScaledNode::Phase::kStarting, 0, it == m.launched.end() ? now : it->second.started});
    }
  }
  // Launched nodes that never registered, and start timeouts.
  for (auto it = m.launched.begin(); it != m.launched.end();) {
    const bool late = now - it->second.started > absl::Seconds(spec.start_timeout_s());
    if (!present.contains(it->first) && !late) {
      scaled.push_back({it->first, ScaledNode::Phase::kStarting, 0, it->second.started});
    }
    if (late) {
      ++m.start_failures;
      m.problem = absl::StrCat("node ", it->first, " did not reach SERVING within ", spec.start_timeout_s(), " s (",
                               m.start_failures, " of ", spec.max_start_failures(), " failed starts)");
      LOG(WARNING) << "autoscaling " << name << ": " << m.problem;
      std::erase_if(scaled, [&](const ScaledNode& s) { return s.name == it->first; });
      if (provider_) (void)provider_->Stop(it->first);
      it = m.launched.erase(it);
    } else {
      ++it;
    }
  }

  int max_grow = 1 << 20;
  if (provider_ == nullptr) {
    max_grow = 0;
  } else if (m.start_failures >= spec.max_start_failures()) {
    max_grow = 0;
    m.problem = absl::StrCat("not growing: ", m.start_failures, " nodes in a row failed to start (last: ", m.problem,
                             "); set the settings again to retry");
  }
  const ScaleDecision d = m.rule.Decide(now, scaled, max_grow);
  if (d.action == ScaleDecision::Action::kScaleOut) {
    Decided(m, d.reason, now);
    ++m.scale_outs;
    const std::string model = absl::StrCat(name, ":", m.version);
    for (int i = 0; i < d.add; ++i) {
      const std::string node = NextNodeName(name, nodes);
      if (absl::Status s = provider_->Start(node, model); !s.ok()) {
        ++m.start_failures;
        m.problem = absl::StrCat(provider_->name(), " provider could not start ", node, ": ", s.message());
        LOG(WARNING) << "autoscaling " << name << ": " << m.problem;
        break;  // Not retried in a loop: the next tick decides again, and failures add up.
      }
      m.launched[node] = {now, false};
    }
  } else if (d.action == ScaleDecision::Action::kScaleIn) {
    Decided(m, d.reason, now);
    ++m.scale_ins;
    m.leaving[d.remove] = now;
    leaving_.insert(d.remove);
  }
  int serving = 0, starting = 0;
  for (const auto& s : scaled) {
    serving += s.phase == ScaledNode::Phase::kServing;
    starting += s.phase == ScaledNode::Phase::kStarting;
  }
  if (d.action == ScaleDecision::Action::kScaleIn) --serving;
  starting += d.action == ScaleDecision::Action::kScaleOut ? d.add : 0;
  m.status.set_desired_nodes(d.desired);
  m.status.set_serving_nodes(serving);
  m.status.set_starting_nodes(starting);
  m.status.set_draining_nodes(draining + (d.action == ScaleDecision::Action::kScaleIn ? 1 : 0));
  m.status.set_load(m.rule.recent());
  m.status.set_panic(m.rule.panic());
  m.status.set_problem(m.problem);
  m.status.set_start_failures(m.start_failures);
  m.status.set_provider(provider_ ? provider_->name() : "none");
  m.status.set_version(m.version);
  m.status.set_scale_in_failed_requests(m.dropped_during_scale_in);
  *m.status.mutable_spec() = spec;
}

void Autoscaling::UpdateEndpoints(const std::vector<InferenceNodeView>& nodes) {
  std::map<std::string, v1::Endpoints> sets;
  for (const auto& n : nodes) {
    if (!n.connected || !n.serving || n.draining || n.model.empty() || leaving_.contains(n.name)) continue;
    v1::Endpoints& e = sets[ModelName(n.model)];
    auto* ep = e.add_endpoints();
    ep->set_node(n.name);
    ep->set_address(n.address);
    ep->set_model(n.model);
  }
  bool changed = false;
  for (auto& [model, set] : endpoints_) {
    if (!sets.contains(model)) sets[model];  // Emptied: still announced.
  }
  for (auto& [model, e] : sets) {
    std::vector<std::string> parts;
    for (const auto& ep : e.endpoints()) parts.push_back(absl::StrCat(ep.node(), "=", ep.address(), "=", ep.model()));
    std::sort(parts.begin(), parts.end());
    const std::string key = absl::StrJoin(parts, ",");
    EndpointSet& current = endpoints_[model];
    if (current.key == key && current.endpoints.revision() > 0) continue;
    current.key = key;
    e.set_model(model);
    e.set_revision(++revision_);
    current.endpoints = std::move(e);
    changed = true;
  }
  (void)changed;  // Waiters re-check their condition whenever mu_ is released.
}

std::string Autoscaling::RenderMetrics() {
  absl::MutexLock lock(&mu_);
  std::string out;
  out += "# HELP kennel_autoscale_desired_nodes Inference nodes the autoscaler wants for the model.\n"
         "# TYPE kennel_autoscale_desired_nodes gauge\n";
  for (const auto& [name, m] : models_) {
    absl::StrAppend(&out, "kennel_autoscale_desired_nodes{model=\"", name, "\"} ", m.status.desired_nodes(), "\n");
  }
  out += "# HELP kennel_autoscale_nodes The model's nodes by phase.\n# TYPE kennel_autoscale_nodes gauge\n";
  for (const auto& [name, m] : models_) {
    absl::StrAppend(&out, "kennel_autoscale_nodes{model=\"", name, "\",phase=\"serving\"} ", m.status.serving_nodes(),
                    "\n", "kennel_autoscale_nodes{model=\"", name, "\",phase=\"starting\"} ",
                    m.status.starting_nodes(), "\n", "kennel_autoscale_nodes{model=\"", name,
                    "\",phase=\"draining\"} ", m.status.draining_nodes(), "\n");
  }
  out += "# HELP kennel_autoscale_load Offered load on the model's serving nodes, in node capacities (1 s mean).\n"
         "# TYPE kennel_autoscale_load gauge\n";
  for (const auto& [name, m] : models_) {
    absl::StrAppend(&out, "kennel_autoscale_load{model=\"", name, "\"} ", m.status.load(), "\n");
  }
  out += "# HELP kennel_autoscale_decisions_total Scale decisions carried out.\n"
         "# TYPE kennel_autoscale_decisions_total counter\n";
  for (const auto& [name, m] : models_) {
    absl::StrAppend(&out, "kennel_autoscale_decisions_total{model=\"", name, "\",direction=\"out\"} ", m.scale_outs,
                    "\n", "kennel_autoscale_decisions_total{model=\"", name, "\",direction=\"in\"} ", m.scale_ins,
                    "\n");
  }
  out += "# HELP kennel_autoscale_scale_in_failed_requests_total Requests the nodes retired by scale-in answered "
         "with an error while they drained.\n# TYPE kennel_autoscale_scale_in_failed_requests_total counter\n";
  for (const auto& [name, m] : models_) {
    absl::StrAppend(&out, "kennel_autoscale_scale_in_failed_requests_total{model=\"", name, "\"} ",
                    m.dropped_during_scale_in, "\n");
  }
  out += "# HELP kennel_autoscale_start_failures Nodes in a row that failed to start.\n"
         "# TYPE kennel_autoscale_start_failures gauge\n";
  for (const auto& [name, m] : models_) {
    absl::StrAppend(&out, "kennel_autoscale_start_failures{model=\"", name, "\"} ", m.start_failures, "\n");
  }
  out += "# HELP kennel_autoscale_node_start_seconds Time from a node's start to SERVING.\n"
         "# TYPE kennel_autoscale_node_start_seconds histogram\n";
  int64_t cumulative = 0;
  for (size_t i = 0; i < std::size(kStartBounds); ++i) {
    cumulative += start_buckets_[i];
    absl::StrAppend(&out, "kennel_autoscale_node_start_seconds_bucket{le=\"", kStartBounds[i], "\"} ", cumulative,
                    "\n");
  }
  cumulative += start_buckets_.back();
  absl::StrAppend(&out, "kennel_autoscale_node_start_seconds_bucket{le=\"+Inf\"} ", cumulative, "\n",
                  "kennel_autoscale_node_start_seconds_sum ", start_sum_, "\n",
                  "kennel_autoscale_node_start_seconds_count ", start_count_, "\n");
  return out;
}

}  // namespace kennel::coordinator
