// Per-epoch data sharding for data-parallel training, the contract of PyTorch's
// DistributedSampler: each epoch a seeded permutation of [0, dataset_size) is padded by
// wrap-around to a multiple of world_size and split so every rank gets the same number of
// samples. The plan is described by (seed, epoch, rank, world_size, dataset_size) alone, so
// the coordinator sends those five numbers and each trainer expands them; the permutation is
// Kennel's own Fisher-Yates over mt19937_64 (both fully specified), never std::shuffle, so
// every machine and standard library computes the same plan.
#ifndef KENNEL_CORE_SHARD_PLAN_H_
#define KENNEL_CORE_SHARD_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace kennel::core {

struct ShardSpec {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int32_t rank = 0;
  int32_t world_size = 1;
  int64_t dataset_size = 0;
  bool shuffle = true;
  // Elastic training: how many samples of the epoch's permutation a previous membership of the
  // group already trained on. Because ranks take every world_size-th element, k steps of W
  // ranks with batch B consume exactly the first W*k*B elements of the permutation, so the
  // epoch's ledger is this one number: a new membership shards the rest of the permutation,
  // and every sample of the epoch is trained on exactly once across the change (plus the
  // padding below, as in every epoch).
  int64_t start = 0;
};

// Samples per rank: ceil(dataset_size / world_size).
int64_t ShardSize(int64_t dataset_size, int32_t world_size);
// Samples per rank of a membership that starts `start` samples into the epoch.
int64_t ShardSize(int64_t dataset_size, int32_t world_size, int64_t start);

// This rank's sample indices for the epoch (from `start`), in the order to visit them: ranks
// take every world_size-th element of the rest of the permutation starting at their rank,
// padded (DistributedSampler's contract) to an equal count per rank with the permutation's
// first elements.
absl::StatusOr<std::vector<int64_t>> ShardIndices(const ShardSpec& spec);

// Evaluation sharding without padding (metrics must count each sample once): rank r takes
// r, r + W, r + 2W, ... Ranks may differ by one sample.
std::vector<int64_t> EvalShardIndices(int64_t dataset_size, int32_t rank, int32_t world_size);

// A 64-bit seed derived from several values (SplitMix64 mixing), e.g. per-sample
// augmentation seeds from (job seed, epoch, sample index).
uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c = 0);

}  // namespace kennel::core

#endif  // KENNEL_CORE_SHARD_PLAN_H_
