// Helpers shared by the Communicator backends.
#ifndef KENNEL_TRAINER_NODE_COMMUNICATOR_INTERNAL_H_
#define KENNEL_TRAINER_NODE_COMMUNICATOR_INTERNAL_H_

#include <vector>

#include "trainer_node/communicator.h"

namespace kennel::trainer {

// After collective #seq timed out: announces this rank in the store and returns the ranks
// that did not announce themselves within `grace`.
std::vector<int> FindMissingRanks(KeyValueStore& store, int rank, int world_size, int64_t seq,
                                  absl::Duration grace);

absl::Status TimeoutError(absl::string_view op, int64_t seq, int rank, absl::Duration timeout,
                          const std::vector<int>& missing, absl::string_view cause);

// A collective that failed at once because a peer's connection broke (reset, closed): not a
// timeout, and not to be reported as one. Names the missing ranks like TimeoutError.
absl::Status PeerLostError(absl::string_view op, int64_t seq, int rank, const std::vector<int>& missing,
                           absl::string_view cause);

// The first rank named by TimeoutError's or PeerLostError's message ("waiting for rank N"), or -1.
int MissingRankFromMessage(absl::string_view message);

}  // namespace kennel::trainer

#endif  // KENNEL_TRAINER_NODE_COMMUNICATOR_INTERNAL_H_
