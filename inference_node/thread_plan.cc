#include "inference_node/thread_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kennel::inference {

absl::StatusOr<ThreadPlan> PlanThreads(int cores, bool on_gpu, int instances, int torch_threads,
                                       int preprocess_threads) {
  if (cores < 1) return absl::InvalidArgumentError(absl::StrCat("cores must be at least 1, got ", cores));
  if (instances < 0 || torch_threads < 0 || preprocess_threads < 0) {
    return absl::InvalidArgumentError("instances, torch threads and preprocess threads must not be negative (0: choose)");
  }
  ThreadPlan plan;
  plan.instances = instances > 0 ? instances : (on_gpu ? 2 : std::min(4, cores));
  plan.torch_threads = torch_threads > 0 ? torch_threads : (on_gpu ? 1 : std::max(1, cores / plan.instances));
  // A GPU instance needs one core to drive it; a CPU instance needs its torch threads.
  const int model_cores = on_gpu ? plan.instances : plan.instances * plan.torch_threads;
  const int free_cores = cores - model_cores;
  std::string decode_why;
  if (preprocess_threads > 0) {
    plan.preprocess_threads = preprocess_threads;
    decode_why = "as given";
  } else if (free_cores >= 1) {
    plan.preprocess_threads = free_cores;
    decode_why = absl::StrCat("the ", free_cores, " cores the model does not use");
  } else {
    plan.preprocess_threads = cores;
    decode_why = "sharing the model's cores: each stage takes a core only while it has work";
  }
  plan.summary = absl::StrCat(cores, " cores: ", plan.instances, " model instance", plan.instances == 1 ? "" : "s",
                              " x ", plan.torch_threads, " torch thread", plan.torch_threads == 1 ? "" : "s",
                              on_gpu ? " driving the GPU" : "", instances > 0 || torch_threads > 0 ? " (as given)" : "",
                              "; ", plan.preprocess_threads, " decode thread", plan.preprocess_threads == 1 ? "" : "s",
                              " (", decode_why, ")");
  return plan;
}

}  // namespace kennel::inference
