#include "trainer_node/communicator.h"

#include <dlfcn.h>
#include <gloo/transport/tcp/device.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"

#include "trainer_node/communicator_internal.h"

namespace kennel::trainer {
namespace {

// Runs fn(rank, communicator) on `world` threads after forming one Gloo group.
void RunGroup(int world, KeyValueStore* store, absl::Duration timeout,
              const std::function<void(int, Communicator&)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto comm = CreateGlooCommunicator(
          {.rank = r, .world_size = world, .store = store, .timeout = timeout});
      ASSERT_TRUE(comm.ok()) << comm.status();
      fn(r, **comm);
    });
  }
  for (auto& t : threads) t.join();
}

// Irregular floats (the global torch RNG is shared between threads, so no randn here); an
// odd size gives uneven ring chunks.
torch::Tensor Values(int rank) {
  return torch::sin(torch::arange(100'003, torch::kFloat32) * (0.37f * (rank + 1))) * 1000;
}

// PyTorch 2.x's libtorch_cpu.so exports a Gloo of another version; Kennel's calls bound to it
// crashed in the first collective. kennel_trainer links libgloo first (CMakeLists.txt): the
// function Kennel calls is the Gloo library's.
TEST(GlooCommunicatorTest, GlooCallsBindToTheGlooLibraryNotLibTorch) {
  Dl_info info{};
  const auto create_device = &gloo::transport::tcp::CreateDevice;
  ASSERT_NE(dladdr(reinterpret_cast<const void*>(create_device), &info), 0);
  ASSERT_NE(info.dli_fname, nullptr);
  EXPECT_NE(std::string(info.dli_fname).find("libgloo"), std::string::npos) << info.dli_fname;
}

TEST(GlooCommunicatorTest, AllReduceSumsAndEveryRankGetsIdenticalBits) {
  InMemoryKeyValueStore store;
  constexpr int kWorld = 3;
  std::vector<torch::Tensor> results(kWorld);
  RunGroup(kWorld, &store, absl::Seconds(30), [&](int rank, Communicator& comm) {
    torch::Tensor t = Values(rank);
    ASSERT_TRUE(comm.AllReduceSum(t).ok());
    results[rank] = t;
  });
  torch::Tensor expected = torch::zeros({100'003});
  for (int r = 0; r < kWorld; ++r) expected += Values(r);
  // Gloo adds the three ranks' values in its own order: each float32 addition of values up to
  // 3,000 rounds by at most 2^-24 x 3,000 = 1.8e-4, so the sums agree to 1e-3 (or 1e-5
  // relative), whatever the CPU; every rank gets the same bits.
  EXPECT_TRUE(torch::allclose(results[0], expected, 1e-5, 1e-3));
  EXPECT_TRUE(torch::equal(results[0], results[1]));
  EXPECT_TRUE(torch::equal(results[0], results[2]));
}

TEST(GlooCommunicatorTest, DoublesAndBroadcast) {
  InMemoryKeyValueStore store;
  std::vector<double> sums(2);
  std::vector<float> received(2);
  RunGroup(2, &store, absl::Seconds(30), [&](int rank, Communicator& comm) {
    torch::Tensor counts = torch::tensor({rank + 1.0, 10.0 * rank}, torch::kFloat64);
    ASSERT_TRUE(comm.AllReduceSum(counts).ok());
    sums[rank] = counts[0].item<double>() + counts[1].item<double>();
    torch::Tensor value = torch::full({4}, static_cast<float>(rank == 1 ? 7 : -1));
    ASSERT_TRUE(comm.Broadcast(value, 1).ok());
    received[rank] = value[3].item<float>();
    EXPECT_TRUE(comm.Barrier().ok());
  });
  EXPECT_EQ(sums[0], 13.0);
  EXPECT_EQ(sums[1], 13.0);
  EXPECT_EQ(received[0], 7.0f);
  EXPECT_EQ(received[1], 7.0f);
}

TEST(GlooCommunicatorTest, TimeoutNamesTheMissingRankAndBreaksTheGroup) {
  InMemoryKeyValueStore store;
  std::vector<absl::Status> statuses(3);
  absl::Notification others_done;
  std::atomic<int> done{0};
  RunGroup(3, &store, absl::Seconds(2), [&](int rank, Communicator& comm) {
    torch::Tensor t = torch::ones({1000});
    ASSERT_TRUE(comm.AllReduceSum(t).ok());  // Everyone takes part once.
    if (rank == 2) {  // Then rank 2 goes silent, its connections open (a stalled process).
      others_done.WaitForNotification();
      return;
    }
    statuses[rank] = comm.AllReduceSum(t);
    EXPECT_FALSE(comm.AllReduceSum(t).ok());  // Broken for good.
    if (++done == 2) others_done.Notify();
  });
  for (int r : {0, 1}) {
    EXPECT_EQ(statuses[r].code(), absl::StatusCode::kDeadlineExceeded) << statuses[r];
    EXPECT_NE(statuses[r].message().find("waiting for rank 2"), std::string::npos) << statuses[r];
    EXPECT_EQ(MissingRankFromMessage(statuses[r].message()), 2);
  }
}

// A peer whose process died (its connections closed) fails the collective at once, and the
// error says so: it used to read "timed out after 1m" although nothing had waited.
TEST(GlooCommunicatorTest, APeerThatDiesIsAConnectionErrorNotATimeout) {
  InMemoryKeyValueStore store;
  std::vector<absl::Status> statuses(3);
  RunGroup(3, &store, absl::Seconds(30), [&](int rank, Communicator& comm) {
    torch::Tensor t = torch::ones({1000});
    ASSERT_TRUE(comm.AllReduceSum(t).ok());
    if (rank == 2) return;  // Its communicator is destroyed: connections closed.
    statuses[rank] = comm.AllReduceSum(t);
  });
  for (int r : {0, 1}) {
    EXPECT_EQ(statuses[r].code(), absl::StatusCode::kUnavailable) << statuses[r];
    EXPECT_NE(statuses[r].message().find("connection to a peer broke"), std::string::npos) << statuses[r];
    EXPECT_EQ(statuses[r].message().find("timed out"), std::string::npos) << statuses[r];
  }
}

// A peer that stalls with its connections open (SIGSTOP, a VM pause, a cut link) leaves the
// others waiting in the collective until the group's timeout: Debian's Gloo wakes no pending
// operation when a connection closes. Abort, from another thread (the coordinator tells every
// survivor), frees each waiting rank at once; and the stalled rank, when it resumes, fails at
// once too, as the others closed their connections.
TEST(GlooCommunicatorTest, AbortFreesCollectivesWaitingForAStalledPeer) {
  InMemoryKeyValueStore store;
  std::vector<absl::Status> statuses(3);
  absl::Notification others_done;
  std::atomic<int> done{0};
  // Long enough that a collective ending by its timeout fails the checks below.
  RunGroup(3, &store, absl::Minutes(2), [&](int rank, Communicator& comm) {
    torch::Tensor t = torch::ones({1000});
    ASSERT_TRUE(comm.AllReduceSum(t).ok());
    if (rank == 2) {  // Stalls, then resumes.
      others_done.WaitForNotification();
      statuses[2] = comm.AllReduceSum(t);
      return;
    }
    std::thread aborter([&comm] {
      absl::SleepFor(absl::Milliseconds(300));  // Most likely inside the collective by then.
      comm.Abort("the coordinator gave up on generation 4");
    });
    statuses[rank] = comm.AllReduceSum(t);
    aborter.join();
    const absl::Status again = comm.AllReduceSum(t);
    EXPECT_EQ(again.code(), absl::StatusCode::kAborted) << again;
    if (++done == 2) others_done.Notify();
  });
  for (int r : {0, 1}) {
    EXPECT_EQ(statuses[r].code(), absl::StatusCode::kAborted) << statuses[r];
    EXPECT_NE(statuses[r].message().find("the coordinator gave up on generation 4"), std::string::npos)
        << statuses[r];
  }
  EXPECT_EQ(statuses[2].code(), absl::StatusCode::kUnavailable) << statuses[2];
  EXPECT_EQ(statuses[2].message().find("timed out"), std::string::npos) << statuses[2];
}

TEST(GlooCommunicatorTest, GroupsWithDifferentPrefixesNeverMeet) {
  // Two generations of one job share the store; each forms its own group of two.
  InMemoryKeyValueStore shared;
  PrefixedKeyValueStore gen1("job/a/gen/1/", &shared), gen2("job/a/gen/2/", &shared);
  std::vector<float> sums(4);
  std::thread first([&] {
    RunGroup(2, &gen1, absl::Seconds(30), [&](int rank, Communicator& comm) {
      torch::Tensor t = torch::full({8}, 1.0f);
      ASSERT_TRUE(comm.AllReduceSum(t).ok());
      sums[rank] = t[0].item<float>();
    });
  });
  std::thread second([&] {
    RunGroup(2, &gen2, absl::Seconds(30), [&](int rank, Communicator& comm) {
      torch::Tensor t = torch::full({8}, 100.0f);
      ASSERT_TRUE(comm.AllReduceSum(t).ok());
      sums[2 + rank] = t[0].item<float>();
    });
  });
  first.join();
  second.join();
  EXPECT_EQ(sums, (std::vector<float>{2, 2, 200, 200}));
}

TEST(GlooCommunicatorTest, BadArgumentsAreRejected) {
  InMemoryKeyValueStore store;
  EXPECT_FALSE(CreateGlooCommunicator({.rank = 2, .world_size = 2, .store = &store}).ok());
  EXPECT_FALSE(CreateGlooCommunicator({.rank = 0, .world_size = 1, .store = nullptr}).ok());
  auto solo = CreateGlooCommunicator({.rank = 0, .world_size = 1, .store = &store});
  ASSERT_TRUE(solo.ok());
  torch::Tensor ints = torch::ones({3}, torch::kInt64);
  EXPECT_EQ((*solo)->AllReduceSum(ints).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kennel::trainer
