// The NCCL backend on real GPUs (ctest -L gpu). NCCL refuses two ranks on one GPU, so the
// world-size-1 tests and the timeout run on any machine with a GPU; the multi-rank tests
// (the same as Gloo's) need 2+ GPUs. Without a GPU every test is skipped, saying why.
#include <c10/cuda/CUDAGuard.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <thread>

#include "trainer_node/communicator.h"
#include "trainer_node/kv_store.h"

namespace kennel::trainer {
namespace {

torch::TensorOptions Cuda(int device = 0) {
  return torch::TensorOptions().dtype(torch::kFloat32).device(torch::Device(torch::kCUDA, device));
}

#define REQUIRE_GPUS(n)                                                                        \
  if (!torch::cuda::is_available() || static_cast<int>(torch::cuda::device_count()) < (n)) {   \
    GTEST_SKIP() << "needs " << (n) << " CUDA GPU(s); " << torch::cuda::device_count()         \
                 << " visible";                                                                \
  }

TEST(NcclCommunicatorTest, WorldOfOneBootstrapsThroughTheStoreAndRunsEveryCollective) {
  REQUIRE_GPUS(1);
  InMemoryKeyValueStore store;
  auto comm = CreateNcclCommunicator({.rank = 0, .world_size = 1, .store = &store, .timeout = absl::Seconds(30)});
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_TRUE(store.Get({"nccl_unique_id"}, absl::Seconds(1)).ok());  // Published for peers.
  torch::Tensor t = torch::arange(1000, Cuda()) * 0.5;
  const torch::Tensor expected = t.clone();
  ASSERT_TRUE((*comm)->AllReduceSum(t).ok());
  EXPECT_TRUE(torch::equal(t.cpu(), expected.cpu()));
  torch::Tensor d = torch::ones({17}, Cuda().dtype(torch::kFloat64));
  ASSERT_TRUE((*comm)->AllReduceSum(d).ok());
  EXPECT_EQ(d.sum().item<double>(), 17.0);
  ASSERT_TRUE((*comm)->Broadcast(t, 0).ok());
  EXPECT_TRUE(torch::equal(t.cpu(), expected.cpu()));
  EXPECT_TRUE((*comm)->Barrier().ok());
}

TEST(NcclCommunicatorTest, BadTensorsAndArgumentsAreRefused) {
  REQUIRE_GPUS(1);
  InMemoryKeyValueStore store;
  EXPECT_EQ(CreateNcclCommunicator({.rank = 2, .world_size = 2, .store = &store}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto comm = CreateNcclCommunicator({.rank = 0, .world_size = 1, .store = &store, .timeout = absl::Seconds(30)});
  ASSERT_TRUE(comm.ok()) << comm.status();
  torch::Tensor cpu = torch::ones({4});
  EXPECT_EQ((*comm)->AllReduceSum(cpu).code(), absl::StatusCode::kInvalidArgument);
  torch::Tensor ints = torch::ones({4}, Cuda().dtype(torch::kInt32));
  EXPECT_EQ((*comm)->AllReduceSum(ints).code(), absl::StatusCode::kInvalidArgument);
  torch::Tensor t = torch::ones({4}, Cuda());
  EXPECT_EQ((*comm)->Broadcast(t, 1).code(), absl::StatusCode::kInvalidArgument);
}

// Rank 1 never comes: initialisation fails at the timeout (ncclCommAbort frees rank 0) and
// the error names the missing rank.
TEST(NcclCommunicatorTest, AMissingRankTimesOutNamingIt) {
  REQUIRE_GPUS(1);
  InMemoryKeyValueStore store;
  auto comm = CreateNcclCommunicator({.rank = 0, .world_size = 2, .store = &store, .timeout = absl::Seconds(3)});
  ASSERT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_NE(comm.status().message().find("rank 1"), std::string::npos) << comm.status();
}

// As Gloo's tests: ranks as threads, each on its own GPU.
void RunGroup(int world, const std::function<void(int, Communicator&)>& fn) {
  InMemoryKeyValueStore store;
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(r));
      auto comm = CreateNcclCommunicator({.rank = r, .world_size = world, .store = &store, .timeout = absl::Seconds(60)});
      ASSERT_TRUE(comm.ok()) << comm.status();
      fn(r, **comm);
    });
  }
  for (auto& t : threads) t.join();
}

TEST(NcclCommunicatorTest, AllReduceSumsAndEveryRankGetsIdenticalBits) {
  REQUIRE_GPUS(2);
  const int world = std::min<int>(4, static_cast<int>(torch::cuda::device_count()));
  std::vector<torch::Tensor> results(static_cast<size_t>(world));
  RunGroup(world, [&](int rank, Communicator& comm) {
    torch::Tensor t = torch::sin(torch::arange(100'003, Cuda(rank)) * (0.37f * (rank + 1))) * 1000;
    ASSERT_TRUE(comm.AllReduceSum(t).ok());
    results[static_cast<size_t>(rank)] = t.cpu();
  });
  torch::Tensor expected = torch::zeros({100'003});
  for (int r = 0; r < world; ++r) expected += torch::sin(torch::arange(100'003, torch::kFloat32) * (0.37f * (r + 1))) * 1000;
  for (int r = 0; r < world; ++r) {
    EXPECT_TRUE(torch::equal(results[static_cast<size_t>(r)], results[0])) << "rank " << r;
    // NCCL's ring sums up to 4 values of magnitude 1,000 in its own order: a few float32
    // roundings of 4,000 (2.4e-4 each) apart from the host's sum.
    EXPECT_LT((results[static_cast<size_t>(r)] - expected).abs().max().item<float>(), 1e-2);
  }
}

TEST(NcclCommunicatorTest, BroadcastFromEveryRoot) {
  REQUIRE_GPUS(2);
  const int world = std::min<int>(4, static_cast<int>(torch::cuda::device_count()));
  RunGroup(world, [&](int rank, Communicator& comm) {
    for (int root = 0; root < world; ++root) {
      torch::Tensor t = torch::full({1000}, static_cast<float>(rank * 10 + 1), Cuda(rank));
      ASSERT_TRUE(comm.Broadcast(t, root).ok());
      EXPECT_EQ(t.min().item<float>(), static_cast<float>(root * 10 + 1));
      EXPECT_EQ(t.max().item<float>(), static_cast<float>(root * 10 + 1));
    }
  });
}

}  // namespace
}  // namespace kennel::trainer
