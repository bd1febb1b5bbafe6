// NodeProviders for the autoscaler (autoscaling.h):
//   local    starts and stops kennel-inference processes on the coordinator's machine (kennelctl
//            up --autoscale, tests, one-machine deployments). Its nodes are the coordinator's
//            children: when it stops, they are told to stop too (SIGTERM: they drain).
//   command  runs a command line for each scale-out and each scale-in (an EC2 Auto Scaling
//            call, `kubectl scale`, a script), with KENNEL_NODE, KENNEL_MODEL,
//            KENNEL_COORDINATOR and KENNEL_ACTION in its environment. The commands run one at a
//            time on the provider's own thread (a slow cloud API never holds the autoscaler);
//            one that fails or runs past its timeout is reported, never retried in a loop.
// On Kubernetes no provider is needed: the coordinator's kennel_autoscale_desired_nodes gauge
// drives the HorizontalPodAutoscaler or KEDA object (deploy/kubernetes/autoscaling).
#ifndef KENNEL_COORDINATOR_NODE_PROVIDERS_H_
#define KENNEL_COORDINATOR_NODE_PROVIDERS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/autoscaling.h"

namespace kennel::coordinator {

struct LocalProviderOptions {
  std::string inference_binary;  // kennel-inference.
  std::string coordinator;       // host:port the nodes register with.
  std::string work_dir;          // Each node's model cache and log go under it.
  // More flags for every node (e.g. --instances 2, TLS flags).
  std::vector<std::string> extra_args;
  // Pin node i to CPU core (first_core + i) modulo the machine's cores (-1: no pinning).
  int first_core = -1;
};
absl::StatusOr<std::unique_ptr<NodeProvider>> MakeLocalProvider(LocalProviderOptions options);

struct CommandProviderOptions {
  std::string scale_out;  // Run through /bin/sh -c.
  std::string scale_in;   // Empty: nothing to run (the node exits by itself when retired).
  std::string coordinator;
  std::string scratch_dir;
  absl::Duration timeout = absl::Minutes(5);
};
absl::StatusOr<std::unique_ptr<NodeProvider>> MakeCommandProvider(CommandProviderOptions options);

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_NODE_PROVIDERS_H_
