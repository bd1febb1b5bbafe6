// Collective communication between the ranks of one training group. Two backends: Gloo
// (CPU tensors over TCP; gloo_communicator.cc) and NCCL (CUDA tensors; nccl_communicator.cc,
// built when CMake finds a CUDA LibTorch and NCCL).
//
// Every collective blocks until done or until the group's timeout; a timeout returns
// DEADLINE_EXCEEDED naming the rank(s) that never arrived, and the communicator is then
// broken (every later call fails): the group must be re-formed. One thread runs collectives;
// Abort may come from any other.
#ifndef KENNEL_TRAINER_NODE_COMMUNICATOR_H_
#define KENNEL_TRAINER_NODE_COMMUNICATOR_H_

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "trainer_node/kv_store.h"

namespace kennel::trainer {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In-place sum over ranks of a contiguous float32, float64, float16 or bfloat16 tensor
  // (16-bit sums are computed in float32 and rounded).
  virtual absl::Status AllReduceSum(torch::Tensor& tensor) = 0;
  // In-place: every rank receives root's values.
  virtual absl::Status Broadcast(torch::Tensor& tensor, int root) = 0;
  virtual absl::Status Barrier() = 0;
  // Wakes a collective blocked in another thread at once (a peer stalled or cut off and the
  // coordinator gave up on the group, or this process is stopping): it and every later call
  // fail with ABORTED carrying `reason`, and the peers' collectives fail too. Thread-safe.
  virtual void Abort(const std::string& reason) = 0;
};

struct CommunicatorOptions {
  int rank = 0;
  int world_size = 1;
  // Bootstraps the group; must outlive the communicator (used again to diagnose timeouts).
  KeyValueStore* store = nullptr;
  // Address this rank listens on for its peers.
  std::string hostname = "127.0.0.1";
  absl::Duration timeout = absl::Seconds(60);
};

// Connects a Gloo group (blocks until every rank has joined or the timeout passes).
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const CommunicatorOptions& options);

// NCCL group on the current CUDA device; UNIMPLEMENTED when built without NCCL.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const CommunicatorOptions& options);

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_COMMUNICATOR_H_
