#include "core/shard_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

namespace kennel::core {
namespace {

std::vector<std::vector<int64_t>> Plan(int64_t n, int world, int64_t epoch, uint64_t seed = 42) {
  std::vector<std::vector<int64_t>> out;
  for (int r = 0; r < world; ++r) {
    out.push_back(*ShardIndices({.seed = seed, .epoch = epoch, .rank = r, .world_size = world,
                                 .dataset_size = n}));
  }
  return out;
}

TEST(ShardPlanTest, ShardsAreEqualSizedAndCoverEverySampleExactlyOnceWhenDivisible) {
  auto plan = Plan(1000, 4, 0);
  std::multiset<int64_t> all;
  for (const auto& shard : plan) {
    EXPECT_EQ(shard.size(), 250u);
    all.insert(shard.begin(), shard.end());
  }
  EXPECT_EQ(all.size(), 1000u);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 1000u);  // Disjoint.
}

TEST(ShardPlanTest, PaddingWrapsAroundLikeDistributedSampler) {
  auto plan = Plan(10, 3, 1);
  std::multiset<int64_t> all;
  for (const auto& shard : plan) {
    EXPECT_EQ(shard.size(), 4u);  // ceil(10 / 3).
    all.insert(shard.begin(), shard.end());
  }
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 10u);  // Every sample covered.
  EXPECT_EQ(all.size(), 12u);  // Two padded repeats.
}

TEST(ShardPlanTest, SameInputsSamePlanAndEachEpochReshuffles) {
  EXPECT_EQ(Plan(500, 2, 3), Plan(500, 2, 3));
  EXPECT_NE(Plan(500, 2, 3), Plan(500, 2, 4));
  EXPECT_NE(Plan(500, 2, 3, 1), Plan(500, 2, 3, 2));
  std::vector<int64_t> first = Plan(10, 1, 0, 7)[0];
  std::vector<int64_t> sorted = first;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NE(first, sorted);
}

std::vector<int64_t> KnownPlan() { return {2, 7, 0, 5, 4, 6, 1, 3}; }

TEST(ShardPlanTest, KnownPermutationIsStable) {
  // Pins the plan for (seed 1, epoch 0, n 8): trainers of mixed Kennel versions or machines
  // must agree, so a change of the algorithm has to show up here.
  auto plan = *ShardIndices({.seed = 1, .epoch = 0, .rank = 0, .world_size = 1, .dataset_size = 8});
  EXPECT_EQ(plan, KnownPlan());
}

TEST(ShardPlanTest, NoShuffleKeepsOrder) {
  auto plan = *ShardIndices({.rank = 1, .world_size = 2, .dataset_size = 6, .shuffle = false});
  EXPECT_EQ(plan, (std::vector<int64_t>{1, 3, 5}));
}

// Elastic training's ledger: 3 ranks train 5 steps of batch 16, then 2 ranks finish the
// epoch from there. Every sample of the epoch is trained on exactly once.
TEST(ShardPlanTest, AMembershipChangeMidEpochTrainsOnEverySampleExactlyOnce) {
  const int64_t n = 1000, batch = 16, steps = 5;
  std::map<int64_t, int> seen;
  for (int32_t r = 0; r < 3; ++r) {
    auto shard = *ShardIndices({.seed = 7, .epoch = 2, .rank = r, .world_size = 3, .dataset_size = n});
    for (int64_t i = 0; i < steps * batch; ++i) seen[shard[static_cast<size_t>(i)]]++;
  }
  const int64_t start = 3 * steps * batch;
  for (int32_t r = 0; r < 2; ++r) {
    auto shard = *ShardIndices({.seed = 7, .epoch = 2, .rank = r, .world_size = 2, .dataset_size = n, .start = start});
    EXPECT_EQ(static_cast<int64_t>(shard.size()), ShardSize(n, 2, start));
    for (int64_t index : shard) seen[index]++;  // 760 over 2 ranks: no padding.
  }
  ASSERT_EQ(static_cast<int64_t>(seen.size()), n);
  for (const auto& [index, count] : seen) EXPECT_EQ(count, 1) << index;
  // The same membership going on from `start` is the same plan as never stopping, padding
  // included (so a resume at the same world size changes nothing).
  for (int32_t r = 0; r < 3; ++r) {
    auto whole = *ShardIndices({.seed = 7, .epoch = 2, .rank = r, .world_size = 3, .dataset_size = n});
    auto rest = *ShardIndices({.seed = 7, .epoch = 2, .rank = r, .world_size = 3, .dataset_size = n, .start = start});
    EXPECT_EQ(std::vector<int64_t>(whole.begin() + steps * batch, whole.end()), rest) << r;
  }
  EXPECT_TRUE(ShardIndices({.seed = 7, .rank = 0, .world_size = 2, .dataset_size = n, .start = n})->empty());
  EXPECT_EQ(ShardIndices({.seed = 7, .rank = 0, .world_size = 2, .dataset_size = n, .start = n + 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ShardPlanTest, BadSpecsAreRejected) {
  EXPECT_FALSE(ShardIndices({.rank = 2, .world_size = 2, .dataset_size = 6}).ok());
  EXPECT_FALSE(ShardIndices({.rank = 0, .world_size = 0, .dataset_size = 6}).ok());
  EXPECT_FALSE(ShardIndices({.rank = 0, .world_size = 1, .dataset_size = 0}).ok());
}

TEST(ShardPlanTest, EvalShardsCountEachSampleOnce) {
  std::vector<int64_t> all;
  for (int r = 0; r < 3; ++r) {
    auto shard = EvalShardIndices(10, r, 3);
    all.insert(all.end(), shard.begin(), shard.end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

}  // namespace
}  // namespace kennel::core
