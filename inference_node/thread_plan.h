// How an inference node divides the machine's cores between its model instances and the
// decode/resize pool, decided once at start (and logged): each count the operator gave is
// kept, the rest follow from the cores.
//
//  - instances: 2 on a GPU (one uploads its batch while the other computes), min(4, cores) on
//    a CPU (several single-thread instances beat one multi-thread forward on small batches);
//  - torch threads per instance: 1 on a GPU (the GPU does the model's arithmetic), cores /
//    instances on a CPU;
//  - decode threads: the cores the instances do not use (on a GPU one core per instance drives
//    it); where the instances use every core (a CPU's default) decoding shares them: a decode
//    thread and a model thread each take a core only while they have work.
#ifndef KENNEL_INFERENCE_NODE_THREAD_PLAN_H_
#define KENNEL_INFERENCE_NODE_THREAD_PLAN_H_

#include <string>

#include "absl/status/statusor.h"

namespace kennel::inference {

struct ThreadPlan {
  int instances = 1;
  int torch_threads = 1;
  int preprocess_threads = 1;
  std::string summary;  // One line for the log: the split and where each number came from.
};

// 0 means "choose". INVALID_ARGUMENT for a negative count or fewer than one core.
absl::StatusOr<ThreadPlan> PlanThreads(int cores, bool on_gpu, int instances, int torch_threads,
                                       int preprocess_threads);

}  // namespace kennel::inference

#endif  // KENNEL_INFERENCE_NODE_THREAD_PLAN_H_
