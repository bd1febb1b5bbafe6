#include "inference_node/thread_plan.h"

#include <gtest/gtest.h>

namespace kennel::inference {
namespace {

ThreadPlan Plan(int cores, bool gpu, int instances = 0, int torch_threads = 0, int decode = 0) {
  auto plan = PlanThreads(cores, gpu, instances, torch_threads, decode);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? *plan : ThreadPlan{};
}

TEST(ThreadPlanTest, AGpuNodeDecodesOnEveryCoreItsInstancesDoNotDrive) {
  const ThreadPlan p = Plan(16, true);
  EXPECT_EQ(p.instances, 2);
  EXPECT_EQ(p.torch_threads, 1);
  EXPECT_EQ(p.preprocess_threads, 14);  // ~14x one core's decoding, where the old default was 1.
  EXPECT_NE(p.summary.find("14 decode threads"), std::string::npos) << p.summary;
  EXPECT_EQ(Plan(64, true).preprocess_threads, 62);
  EXPECT_EQ(Plan(2, true).preprocess_threads, 2);  // No core to spare: decoding shares them.
}

TEST(ThreadPlanTest, ACpuNodeGivesTheModelItsCoresAndDecodesOnThemToo) {
  ThreadPlan p = Plan(2, false);
  EXPECT_EQ(p.instances, 2);
  EXPECT_EQ(p.torch_threads, 1);
  EXPECT_EQ(p.preprocess_threads, 2);
  p = Plan(16, false);
  EXPECT_EQ(p.instances, 4);
  EXPECT_EQ(p.torch_threads, 4);
  EXPECT_EQ(p.preprocess_threads, 16);
  EXPECT_NE(p.summary.find("sharing the model's cores"), std::string::npos) << p.summary;
  // 6 cores: 4 instances of 1 thread leave 2 cores to decode on.
  p = Plan(6, false);
  EXPECT_EQ(p.torch_threads, 1);
  EXPECT_EQ(p.preprocess_threads, 2);
  EXPECT_NE(p.summary.find("the 2 cores the model does not use"), std::string::npos) << p.summary;
}

TEST(ThreadPlanTest, WhatTheOperatorGivesIsKeptAndTheRestFollows) {
  ThreadPlan p = Plan(16, false, /*instances=*/2, /*torch_threads=*/1);
  EXPECT_EQ(p.instances, 2);
  EXPECT_EQ(p.torch_threads, 1);
  EXPECT_EQ(p.preprocess_threads, 14);
  p = Plan(16, true, 0, 0, /*decode=*/3);
  EXPECT_EQ(p.preprocess_threads, 3);
  EXPECT_NE(p.summary.find("as given"), std::string::npos);
  p = Plan(1, false);
  EXPECT_EQ(p.instances, 1);
  EXPECT_EQ(p.torch_threads, 1);
  EXPECT_EQ(p.preprocess_threads, 1);
}

TEST(ThreadPlanTest, NegativeCountsAndNoCoresAreRefused) {
  EXPECT_EQ(PlanThreads(0, false, 0, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanThreads(4, false, -1, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanThreads(4, false, 0, 0, -2).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kennel::inference
