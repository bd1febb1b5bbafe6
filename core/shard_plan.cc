#include "core/shard_plan.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"

namespace kennel::core {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [0, bound) by rejection, so the result does not depend on the standard
// library's distribution implementation.
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t r;
  do {
    r = rng();
  } while (r >= limit);
  return r % bound;
}

}  // namespace

uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c) {
  return SplitMix64(SplitMix64(SplitMix64(a) ^ b) ^ c);
}

int64_t ShardSize(int64_t dataset_size, int32_t world_size) {
  return world_size <= 0 ? 0 : (dataset_size + world_size - 1) / world_size;
}

int64_t ShardSize(int64_t dataset_size, int32_t world_size, int64_t start) {
  return ShardSize(std::max<int64_t>(0, dataset_size - start), world_size);
}

absl::StatusOr<std::vector<int64_t>> ShardIndices(const ShardSpec& spec) {
  if (spec.world_size < 1 || spec.rank < 0 || spec.rank >= spec.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", spec.rank, " is not in a world of size ", spec.world_size));
  }
  if (spec.dataset_size < 1) {
    return absl::InvalidArgumentError("cannot shard an empty dataset");
  }
  if (spec.start < 0 || spec.start > spec.dataset_size) {
    return absl::InvalidArgumentError(absl::StrCat("an epoch of ", spec.dataset_size,
                                                   " samples cannot start at sample ", spec.start));
  }
  std::vector<int64_t> order(static_cast<size_t>(spec.dataset_size));
  std::iota(order.begin(), order.end(), 0);
  if (spec.shuffle) {
    std::mt19937_64 rng(MixSeed(spec.seed, static_cast<uint64_t>(spec.epoch)));
    for (size_t i = order.size() - 1; i > 0; --i) {
      std::swap(order[i], order[UniformBelow(rng, i + 1)]);
    }
  }
  const int64_t rest = spec.dataset_size - spec.start;
  const int64_t per_rank = ShardSize(rest, spec.world_size);
  const int64_t total = per_rank * spec.world_size;
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(per_rank));
  for (int64_t i = spec.rank; i < total; i += spec.world_size) {
    // Past the end: wrap-around padding from the permutation's start.
    const int64_t at = i < rest ? spec.start + i : (i - rest) % spec.dataset_size;
    out.push_back(order[static_cast<size_t>(at)]);
  }
  return out;
}

std::vector<int64_t> EvalShardIndices(int64_t dataset_size, int32_t rank, int32_t world_size) {
  std::vector<int64_t> out;
  for (int64_t i = rank; i < dataset_size; i += world_size) out.push_back(i);
  return out;
}

}  // namespace kennel::core
