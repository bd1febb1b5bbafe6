// Autoscaled serving in the coordinator: for every model with autoscaling settings, an
// AutoscaleRule decides each tick from the nodes' reported loads, and this part carries the
// decisions out through a NodeProvider (start a node; stop one that has left) and the cluster
// (ServingFleet: the inference nodes as they are; tell one to leave). It also keeps each model's
// endpoint set (its SERVING nodes that are not leaving), which clients watch.
//
// Scale-in without loss: the node leaves the endpoint set first (watchers see it at once),
// is told to retire after `retire_delay` (clients have moved their streams), reports
// NOT_SERVING, answers what it holds and exits; only when its stream to the coordinator has
// closed is the provider told to stop it.
//
// A node that does not reach SERVING within the start timeout, or whose process ends first,
// is a failed start: logged, stopped, counted; after max_start_failures in a row the model
// grows no more (its status says why) until its settings are set again or a node serves.
// Settings are durable (StateStore); after a restart the nodes already serving a model are
// adopted: every inference node serving or assigned the model counts as one of its nodes.
//
// Thread-safe. Owns a thread that ticks every `tick` (Start); the destructor stops it.
#ifndef KENNEL_COORDINATOR_AUTOSCALING_H_
#define KENNEL_COORDINATOR_AUTOSCALING_H_

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/autoscaler.h"
#include "coordinator/state_store.h"
#include "kennel/v1/autoscale.pb.h"

namespace kennel::coordinator {

// An inference node as the autoscaler needs to see it.
struct InferenceNodeView {
  std::string name;
  std::string address;
  std::string model;          // "name:version" served ("" while none).
  std::string desired_model;  // "name:version" the coordinator wants there.
  bool connected = false;
  bool serving = false;
  bool draining = false;
  kennel::v1::NodeLoad load;
};

// What the autoscaler needs of the cluster (Cluster implements it).
class ServingFleet {
 public:
  virtual ~ServingFleet() = default;
  virtual std::vector<InferenceNodeView> InferenceNodes() = 0;
  // Tells `node` to drain and exit (NOT_FOUND / UNAVAILABLE when it is not connected).
  virtual absl::Status Retire(const std::string& node, const std::string& reason) = 0;
  // The version of `model` new nodes serve when the settings name none: the last deployed, or
  // the newest fit to serve. NOT_FOUND / FAILED_PRECONDITION as a deploy would say.
  virtual absl::StatusOr<int64_t> VersionToServe(const std::string& model) = 0;
};

// How capacity is added and removed.
class NodeProvider {
 public:
  virtual ~NodeProvider() = default;
  virtual std::string name() const = 0;
  // Starts a node named `node` that registers with the coordinator and serves `model`
  // ("name:version"). Returns once it is launched, not once it serves.
  virtual absl::Status Start(const std::string& node, const std::string& model) = 0;
  // `node` has left (or is given up on): release it (stop its process, run the scale-in command).
  virtual absl::Status Stop(const std::string& node) = 0;
  // Nodes this provider started whose process has ended since the last call, with how.
  virtual std::vector<std::pair<std::string, std::string>> Ended() { return {}; }
};

struct AutoscalingOptions {
  absl::Duration tick = absl::Milliseconds(250);
  // Between a node leaving the endpoint set and being told to retire: time for clients that
  // watch the set to move their streams.
  absl::Duration retire_delay = absl::Seconds(1);
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

class Autoscaling {
 public:
  // Without a provider the settings are kept and decisions made (status and /metrics show
  // them, for an outside scaler such as Kubernetes' HPA), but nothing is started.
  Autoscaling(AutoscalingOptions options, StateStore* state, ServingFleet* fleet,
              std::unique_ptr<NodeProvider> provider = nullptr);
  ~Autoscaling();

  // Before Start only.
  void SetProvider(std::unique_ptr<NodeProvider> provider) { provider_ = std::move(provider); }
  // Loads the stored settings and starts ticking.
  absl::Status Start();

  // Checks `spec` (INVALID_ARGUMENT), resolves the version new nodes serve, stores and applies
  // it. `disable`: turn the model's autoscaling off (its nodes stay).
  absl::StatusOr<kennel::v1::AutoscaleStatus> Set(const std::string& model, const kennel::v1::AutoscaleSpec& spec,
                                                  bool disable);
  // Every autoscaled model's status (or `model`'s: NOT_FOUND when it is not autoscaled).
  absl::StatusOr<std::vector<kennel::v1::AutoscaleStatus>> Get(const std::string& model);

  // The model's endpoint set now; WaitForEndpoints blocks until its revision differs from
  // `seen` or `timeout` passes (then returns the set as it is).
  kennel::v1::Endpoints Endpoints(const std::string& model);
  kennel::v1::Endpoints WaitForEndpoints(const std::string& model, int64_t seen, absl::Duration timeout);

  // Prometheus text: per model, desired and actual nodes, decisions, start-to-SERVING times.
  std::string RenderMetrics();

  // One pass (the thread calls it; tests may too).
  void Tick();

 private:
  struct Launch {
    absl::Time started;
    bool serving_seen = false;
  };
  struct Model {
    explicit Model(kennel::v1::AutoscaleSpec spec) : rule(std::move(spec)) {}
    AutoscaleRule rule;
    int64_t version = 0;
    std::map<std::string, Launch> launched;          // Started by us, not yet SERVING.
    std::map<std::string, absl::Time> leaving;       // Out of the endpoint set, since.
    std::set<std::string> retired;                   // Told to retire; stopped once disconnected.
    std::set<std::string> known;                     // Every node seen as the model's.
    std::map<std::string, int64_t> drain_failures;   // Leaving nodes: failed while draining.
    int start_failures = 0;
    std::string problem;
    std::string last_decision;
    absl::Time last_decision_at = absl::InfinitePast();
    int64_t scale_outs = 0, scale_ins = 0, dropped_during_scale_in = 0;
    kennel::v1::AutoscaleStatus status;
  };
  struct EndpointSet {
    kennel::v1::Endpoints endpoints;
    std::string key;  // To see changes.
  };

  static std::string ModelName(const std::string& model_version);
  void TickModel(const std::string& name, Model& model, const std::vector<InferenceNodeView>& nodes, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateEndpoints(const std::vector<InferenceNodeView>& nodes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NextNodeName(const std::string& model, const std::vector<InferenceNodeView>& nodes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Decided(Model& model, const std::string& what, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();

  const AutoscalingOptions options_;
  StateStore* const state_;
  ServingFleet* const fleet_;
  std::unique_ptr<NodeProvider> provider_;  // Set before Start.

  absl::Mutex mu_;
  std::map<std::string, Model> models_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, EndpointSet> endpoints_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> leaving_ ABSL_GUARDED_BY(mu_);  // Every model's leaving nodes.
  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_node_ ABSL_GUARDED_BY(mu_) = 1;
  // Seconds from a node's start to SERVING (histogram buckets, counts) and their sum.
  std::vector<int64_t> start_buckets_ ABSL_GUARDED_BY(mu_);
  double start_sum_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t start_count_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_AUTOSCALING_H_
