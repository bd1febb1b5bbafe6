#include "coordinator/cluster.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <optional>

#include "coordinator/tuner.h"
#include "core/ml/artifact.h"
#include "core/ml/dataset.h"

namespace kennel::coordinator {
namespace {

// Records what the coordinator sent to one trainer.
class FakeChannel : public TrainerChannel {
 public:
  void Send(const v1::CoordinatorMessage& m) override {
    absl::MutexLock lock(&mu_);
    if (closed_.has_value()) return;
    sent_.push_back(m);
  }
  void Close(const absl::Status& why) override {
    absl::MutexLock lock(&mu_);
    if (!closed_.has_value()) closed_ = why;
  }
  std::optional<absl::Status> closed() {
    absl::MutexLock lock(&mu_);
    return closed_;
  }
  std::vector<v1::CoordinatorMessage> sent() {
    absl::MutexLock lock(&mu_);
    return sent_;
  }
  std::vector<v1::Assignment> assignments() {
    std::vector<v1::Assignment> out;
    for (const auto& m : sent()) if (m.has_assign()) out.push_back(m.assign());
    return out;
  }
  int aborts() {
    int n = 0;
    for (const auto& m : sent()) n += m.has_abort();
    return n;
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::CoordinatorMessage> sent_;
  std::optional<absl::Status> closed_;
};

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    Open();
  }
  void Open() {
    cluster_.reset();
    artifacts_.reset();
    state_.reset();
    state_ = *StateStore::Open((dir_ / "state.db").string());
    artifacts_ = *ArtifactStore::Create((dir_ / "artifacts").string(), state_.get());
    ClusterOptions options;
    options.heartbeat_timeout = absl::Seconds(10);
    options.tick = absl::Hours(1);  // The test drives Tick() itself.
    options.now = [this] { return now_; };
    cluster_ = *Cluster::Create(options, state_.get(), artifacts_.get());
  }
  // Registers `name` as process `incarnation` on a new stream.
  std::shared_ptr<FakeChannel> Join(const std::string& name, const std::string& incarnation = "") {
    auto channel = std::make_shared<FakeChannel>();
    v1::Register r;
    r.set_name(name);
    r.set_incarnation(incarnation.empty() ? name + "-process" : incarnation);
    r.mutable_resources()->set_cpu_cores(2);
    EXPECT_TRUE(cluster_->RegisterTrainer(r, channel).ok());
    channels_[name] = channel;
    return channel;
  }
  // After a coordinator restart: `name`'s process comes back on a new stream, still running
  // `generation` of `job_id`. Null when the cluster refused it.
  std::shared_ptr<FakeChannel> Rejoin(const std::string& name, const std::string& job_id, int64_t generation) {
    auto channel = std::make_shared<FakeChannel>();
    v1::Register r;
    r.set_name(name);
    r.set_incarnation(name + "-process");
    r.set_job_id(job_id);
    r.set_generation(generation);
    if (!cluster_->RegisterTrainer(r, channel).ok()) return nullptr;
    channels_[name] = channel;
    return channel;
  }
  // `m` from `name` on its newest stream.
  void Message(const std::string& name, const v1::TrainerMessage& m) {
    cluster_->OnTrainerMessage(name, channels_[name].get(), m);
  }
  v1::JobSpec Spec(int world) {
    v1::JobSpec spec;
    spec.set_name("m");
    spec.set_world_size(world);
    spec.mutable_model()->set_architecture(v1::SMALL_CNN);
    spec.mutable_model()->set_in_channels(1);
    spec.mutable_preprocess()->set_height(28);
    spec.mutable_preprocess()->set_width(28);
    spec.mutable_dataset()->set_format(v1::DatasetIndex::IDX);
    spec.mutable_dataset()->set_root(core::kDebianFashionMnistRoot);
    spec.mutable_dataset()->set_max_train_samples(100);
    spec.mutable_dataset()->set_max_eval_samples(50);
    return spec;
  }
  // Rank 0's report that generation `generation` of `job_id` failed.
  static v1::TrainerMessage Failed(const std::string& job_id, int64_t generation, const std::string& error,
                                   int32_t missing_rank, v1::JobFailed::Cause cause) {
    v1::TrainerMessage m;
    auto* f = m.mutable_failed();
    f->set_job_id(job_id);
    f->set_generation(generation);
    f->set_rank(0);
    f->set_error(error);
    f->set_missing_rank(missing_rank);
    f->set_cause(cause);
    return m;
  }
  // Rank `rank`'s report that it finished generation `generation` of `job_id`.
  static v1::TrainerMessage Finished(const std::string& job_id, int64_t generation, int32_t rank) {
    v1::TrainerMessage m;
    auto* f = m.mutable_finished();
    f->set_job_id(job_id);
    f->set_generation(generation);
    f->set_rank(rank);
    return m;
  }
  // `name` reports that its work on generation `generation` of `job_id` has ended.
  void Idle(const std::string& name, const std::string& job_id, int64_t generation) {
    v1::TrainerMessage m;
    m.mutable_idle()->set_job_id(job_id);
    m.mutable_idle()->set_generation(generation);
    Message(name, m);
  }
  // A checkpoint of `job_id` in the artifact store, committed as an upload is.
  absl::Status StoreCheckpoint(const std::string& job_id) {
    const auto staging = dir_ / "staging-checkpoint";
    std::filesystem::create_directories(staging);
    { std::ofstream(staging / "checkpoint.bin") << "a checkpoint"; }
    return artifacts_->CommitCheckpoint(staging.string(), job_id);
  }
  void Heartbeat(const std::string& name) {
    v1::TrainerMessage m;
    m.mutable_heartbeat();
    Message(name, m);
  }

  std::filesystem::path dir_;
  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<Cluster> cluster_;
  std::map<std::string, std::shared_ptr<FakeChannel>> channels_;
};

TEST_F(ClusterTest, JobWaitsForEnoughTrainersThenAssignsEveryRank) {
  auto a = Join("a");
  auto job = cluster_->SubmitJob(Spec(2));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->spec().model().num_classes(), 10);  // Filled from the dataset.
  EXPECT_EQ(job->train_samples(), 100);
  cluster_->Tick();
  auto waiting = *cluster_->GetJob(job->id());
  EXPECT_EQ(waiting.state(), v1::PENDING);
  EXPECT_NE(waiting.message().find("waiting for 2 free trainers (1 free"), std::string::npos) << waiting.message();
  auto b = Join("b");
  cluster_->Tick();
  auto running = *cluster_->GetJob(job->id());
  EXPECT_EQ(running.state(), v1::RUNNING);
  EXPECT_EQ(running.generation(), 1);
  ASSERT_EQ(a->assignments().size(), 1u);
  ASSERT_EQ(b->assignments().size(), 1u);
  EXPECT_EQ(a->assignments()[0].rank() + b->assignments()[0].rank(), 1);
  EXPECT_EQ(a->assignments()[0].train().samples_size(), 100);
  EXPECT_EQ(a->assignments()[0].world_size(), 2);
}

// A trainer stalled past the heartbeat timeout (SIGSTOP, a VM pause) used to stay "dead"
// while alive: its old stream stayed open and its heartbeats on it refreshed nothing.
TEST_F(ClusterTest, AStalledTrainerIsClosedOutThenComesBackOnANewStream) {
  auto a = Join("a");
  auto b = Join("b");
  auto job = *cluster_->SubmitJob(Spec(2));
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);
  now_ += absl::Seconds(12);
  Heartbeat("a");
  cluster_->Tick();  // b stalled for 12 s.
  ASSERT_TRUE(b->closed().has_value());  // Its stream is ended: it will reconnect.
  EXPECT_EQ(b->closed()->code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(b->closed()->message().find("declared b dead"), std::string::npos) << *b->closed();
  EXPECT_FALSE(a->closed().has_value());
  // b wakes up and talks on its old stream: nothing changes.
  Heartbeat("b");
  cluster_->Tick();
  auto status = cluster_->Status();
  for (const auto& n : status.nodes()) {
    if (n.name() == "b") {
      EXPECT_EQ(n.state(), v1::DEAD);
      EXPECT_NE(n.detail().find("no heartbeat"), std::string::npos) << n.detail();
    }
  }
  // It reconnects as the same process, still on the old generation: told to abort it, and
  // usable again once idle. The job re-forms with both.
  auto b2 = std::make_shared<FakeChannel>();
  v1::Register r;
  r.set_name("b");
  r.set_incarnation("b-process");
  r.set_job_id(job.id());
  r.set_generation(1);
  ASSERT_TRUE(cluster_->RegisterTrainer(r, b2).ok());
  channels_["b"] = b2;
  EXPECT_EQ(b2->aborts(), 1);
  Idle("a", job.id(), 1);
  Idle("b", job.id(), 1);
  cluster_->Tick();
  auto resumed = *cluster_->GetJob(job.id());
  EXPECT_EQ(resumed.state(), v1::RUNNING);
  EXPECT_EQ(resumed.generation(), 2);
  EXPECT_EQ(b2->assignments().size(), 1u);
}

// Two processes under one name: the second is refused, the first keeps its job.
TEST_F(ClusterTest, ADuplicateNameIsRefusedAndTheLiveNodeKeepsWorking) {
  auto a = Join("a");
  auto b = Join("b");
  auto job = *cluster_->SubmitJob(Spec(2));
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);
  v1::Register impostor;
  impostor.set_name("b");
  impostor.set_incarnation("another-process");
  auto refused = cluster_->RegisterTrainer(impostor, std::make_shared<FakeChannel>());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(refused.status().message().find("already connected"), std::string::npos) << refused.status();
  EXPECT_FALSE(b->closed().has_value());
  EXPECT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);
  EXPECT_EQ(cluster_->GetJob(job.id())->generation(), 1);
  EXPECT_EQ(a->aborts() + b->aborts(), 0);
  // Once the first is gone, the name is free for a replacement.
  cluster_->OnTrainerDisconnected("b", b.get());
  EXPECT_TRUE(cluster_->RegisterTrainer(impostor, std::make_shared<FakeChannel>()).ok());
}

TEST_F(ClusterTest, SilentTrainerIsDeclaredDeadAndTheJobRecovers) {
  auto a = Join("a");
  auto b = Join("b");
  auto job = *cluster_->SubmitJob(Spec(2));
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);
  now_ += absl::Seconds(8);
  Heartbeat("a");
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);  // 8 s < 10 s timeout.
  now_ += absl::Seconds(4);  // b silent for 12 s, a for 4 s.
  cluster_->Tick();
  auto status = cluster_->Status();
  for (const auto& n : status.nodes()) {
    EXPECT_EQ(n.state(), n.name() == "b" ? v1::DEAD : v1::BUSY) << n.name();
  }
  auto recovering = *cluster_->GetJob(job.id());
  EXPECT_EQ(recovering.state(), v1::RECOVERING);
  EXPECT_EQ(recovering.generation(), 2);
  EXPECT_NE(recovering.message().find("trainer b"), std::string::npos);
  EXPECT_EQ(a->aborts(), 1);  // The survivor stops generation 1.
  // Once the survivor is idle and a replacement joins, generation 2 starts.
  auto c = Join("c");
  Idle("a", job.id(), 1);
  cluster_->Tick();
  auto resumed = *cluster_->GetJob(job.id());
  EXPECT_EQ(resumed.state(), v1::RUNNING);
  EXPECT_EQ(resumed.generation(), 2);
  ASSERT_EQ(c->assignments().size(), 1u);
  EXPECT_EQ(c->assignments()[0].generation(), 2);
}

TEST_F(ClusterTest, RendezvousIsIsolatedBetweenJobsAndGenerations) {
  auto a = Join("a");
  auto b = Join("b");
  auto j1 = *cluster_->SubmitJob(Spec(1));
  auto j2 = *cluster_->SubmitJob(Spec(1));
  cluster_->Tick();
  ASSERT_TRUE(cluster_->StoreSet(j1.id(), 1, "rank0", "addr-1").ok());
  EXPECT_EQ(*cluster_->StoreGet(j1.id(), 1, {"rank0"}), std::vector<std::string>{"addr-1"});
  EXPECT_EQ(cluster_->StoreGet(j2.id(), 1, {"rank0"}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cluster_->StoreGet(j1.id(), 2, {"rank0"}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cluster_->StoreGet("job-404", 1, {"rank0"}).status().code(), absl::StatusCode::kNotFound);
  // j1's trainer dies: generation 2 must not see generation 1's keys, and generation 1 is fenced.
  const std::string j1_node = cluster_->GetJob(j1.id())->nodes(0);
  cluster_->OnTrainerDisconnected(j1_node, (j1_node == "a" ? a : b).get());
  EXPECT_EQ(cluster_->StoreSet(j1.id(), 1, "rank0", "stale").code(), absl::StatusCode::kFailedPrecondition);
  auto c = Join("c");
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(j1.id())->generation(), 2);
  ASSERT_EQ(cluster_->GetJob(j1.id())->state(), v1::RUNNING);
  EXPECT_EQ(cluster_->StoreGet(j1.id(), 2, {"rank0"}).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClusterTest, AcknowledgedStateSurvivesARestart) {
  auto a = Join("a");
  auto running = *cluster_->SubmitJob(Spec(1));
  cluster_->Tick();
  auto pending = *cluster_->SubmitJob(Spec(2));
  auto cancelled = *cluster_->SubmitJob(Spec(2));
  ASSERT_TRUE(cluster_->CancelJob(cancelled.id()).ok());
  v1::TrainerMessage epoch;
  epoch.mutable_epoch()->set_job_id(running.id());
  epoch.mutable_epoch()->set_generation(1);
  epoch.mutable_epoch()->mutable_metrics()->set_eval_accuracy(0.75);
  Message("a", epoch);

  Open();  // The coordinator restarts.
  auto jobs = cluster_->ListJobs(10);
  ASSERT_EQ(jobs.size(), 3u);
  auto r = *cluster_->GetJob(running.id());
  // Its trainer may still be training: the job waits for it at its generation...
  EXPECT_EQ(r.state(), v1::RUNNING);
  EXPECT_EQ(r.generation(), 1);
  EXPECT_NE(r.message().find("waiting up to 30s for its trainers (a) to register again"), std::string::npos)
      << r.message();
  // ...and re-forms the group from its checkpoint when the trainer does not come back in time.
  now_ += absl::Seconds(31);
  cluster_->Tick();
  r = *cluster_->GetJob(running.id());
  EXPECT_EQ(r.state(), v1::RECOVERING);
  EXPECT_EQ(r.generation(), 2);
  EXPECT_NE(r.message().find("a did not register again within 30s"), std::string::npos) << r.message();
  ASSERT_EQ(r.epochs_size(), 1);
  EXPECT_DOUBLE_EQ(r.epochs(0).eval_accuracy(), 0.75);
  EXPECT_EQ(cluster_->GetJob(pending.id())->state(), v1::PENDING);
  EXPECT_EQ(cluster_->GetJob(cancelled.id())->state(), v1::CANCELLED);
  auto events = *state_->JobEvents(running.id());
  EXPECT_GE(events.size(), 4u);  // submitted, running, epoch, restarted.
  // Job ids keep counting after a restart.
  EXPECT_EQ(cluster_->SubmitJob(Spec(1))->id(), "job-4");
  // Nodes are remembered, shown dead until they reconnect.
  ASSERT_EQ(cluster_->Status().nodes_size(), 1);
  EXPECT_EQ(cluster_->Status().nodes(0).state(), v1::DEAD);
}

// A coordinator restart used to bump every running job's generation, so its trainers threw
// away what they trained during the outage. Trainers that come back with the job's current
// generation now simply carry on.
TEST_F(ClusterTest, TrainersThatComeBackAfterACoordinatorRestartCarryOn) {
  auto a = Join("a");
  auto b = Join("b");
  auto job = *cluster_->SubmitJob(Spec(2));
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);
  Open();  // The coordinator restarts; the trainers reconnect still running generation 1.
  channels_.clear();
  for (const std::string name : {"a", "b"}) {
    auto channel = Rejoin(name, job.id(), 1);
    ASSERT_NE(channel, nullptr) << name;
    EXPECT_EQ(channel->aborts(), 0) << name;
    cluster_->Tick();
  }
  auto carried_on = *cluster_->GetJob(job.id());
  EXPECT_EQ(carried_on.state(), v1::RUNNING);
  EXPECT_EQ(carried_on.generation(), 1);
  EXPECT_EQ(carried_on.message(), "");
  // Nothing re-forms later either; the job finishes at generation 1.
  now_ += absl::Minutes(5);
  Heartbeat("a");
  Heartbeat("b");
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(job.id())->generation(), 1);
  for (const std::string name : {"a", "b"}) {
    Message(name, Finished(job.id(), 1, cluster_->GetJob(job.id())->nodes(0) == name ? 0 : 1));
  }
  EXPECT_EQ(cluster_->GetJob(job.id())->state(), v1::SUCCEEDED);
}

// A rank that finished while the coordinator was down comes back idle with its kept Finished;
// rank 0, still publishing the model, comes back with the generation. The finished rank is
// not missing: past the reattach window the job has not re-formed, and rank 0's report ends it.
TEST_F(ClusterTest, ARankThatFinishedDuringAnOutageIsNotWaitedFor) {
  Join("a");
  Join("b");
  auto job = *cluster_->SubmitJob(Spec(2));
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);
  const std::string rank0 = cluster_->GetJob(job.id())->nodes(0);
  const std::string rank1 = cluster_->GetJob(job.id())->nodes(1);
  Open();
  channels_.clear();
  ASSERT_NE(Rejoin(rank0, job.id(), 1), nullptr);
  Join(rank1);  // Idle now.
  Message(rank1, Finished(job.id(), 1, 1));
  Idle(rank1, job.id(), 1);
  now_ += absl::Minutes(2);  // Past the reattach window (30 s).
  Heartbeat(rank0);
  Heartbeat(rank1);
  cluster_->Tick();
  auto waiting = *cluster_->GetJob(job.id());
  EXPECT_EQ(waiting.state(), v1::RUNNING) << waiting.message();
  EXPECT_EQ(waiting.generation(), 1);
  Message(rank0, Finished(job.id(), 1, 0));
  EXPECT_EQ(cluster_->GetJob(job.id())->state(), v1::SUCCEEDED);
}

TEST_F(ClusterTest, BadSubmissionsAndCancelsAreRefused) {
  v1::JobSpec spec = Spec(1);
  spec.mutable_model()->set_num_classes(3);
  EXPECT_EQ(cluster_->SubmitJob(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = Spec(1);
  spec.mutable_dataset()->set_root("/nonexistent");
  EXPECT_EQ(cluster_->SubmitJob(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = Spec(0);
  spec.set_world_size(-1);
  EXPECT_EQ(cluster_->SubmitJob(spec).status().code(), absl::StatusCode::kInvalidArgument);
  auto job = *cluster_->SubmitJob(Spec(1));
  ASSERT_TRUE(cluster_->CancelJob(job.id()).ok());
  EXPECT_EQ(cluster_->CancelJob(job.id()).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cluster_->CancelJob("job-77").status().code(), absl::StatusCode::kNotFound);
  v1::Register nameless;
  EXPECT_EQ(cluster_->RegisterTrainer(nameless, std::make_shared<FakeChannel>()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClusterTest, FailedRankNamesTheTrainerItWaitedFor) {
  auto a = Join("a");
  auto b = Join("b");
  auto job = *cluster_->SubmitJob(Spec(2));
  cluster_->Tick();
  const auto running = *cluster_->GetJob(job.id());
  Message(running.nodes(0), Failed(job.id(), 1, "all-reduce #12 on rank 0 timed out after 1m, waiting for rank 1 (...)",
                                   1, v1::JobFailed::CAUSE_UNSPECIFIED));
  auto ended = *cluster_->GetJob(job.id());
  EXPECT_EQ(ended.state(), v1::FAILED);
  EXPECT_NE(ended.message().find("rank 1 is trainer " + running.nodes(1)), std::string::npos) << ended.message();
}

// After a coordinator restart, rank 0 is back and reports that it lost rank 1, whose trainer
// has not registered again: the job re-forms at once (not after the reattach window, and not by
// rewriting the absent node's record, as it used to).
TEST_F(ClusterTest, ARankLostOnANodeNotConnectedReFormsTheGroup) {
  auto a = Join("a");
  auto b = Join("b");
  auto job = *cluster_->SubmitJob(Spec(2));
  cluster_->Tick();
  const auto running = *cluster_->GetJob(job.id());
  Open();  // The coordinator restarts; only rank 0's trainer comes back.
  channels_.clear();
  const std::string first = running.nodes(0), second = running.nodes(1);
  ASSERT_NE(Rejoin(first, job.id(), 1), nullptr);
  const auto before = cluster_->Status();
  Message(first, Failed(job.id(), 1, "all-reduce #40 on rank 0 failed: the connection to a peer broke; waiting for rank 1",
                        1, v1::JobFailed::COLLECTIVE));
  const auto got = cluster_->GetJob(job.id());
  ASSERT_TRUE(got.ok()) << got.status();
  const auto& recovering = *got;
  EXPECT_EQ(recovering.state(), v1::RECOVERING);
  EXPECT_EQ(recovering.generation(), 2);
  EXPECT_NE(recovering.message().find("trainer " + second + " (rank 1) is not connected"), std::string::npos)
      << recovering.message();
  // The absent trainer's record is unchanged.
  const auto after = cluster_->Status();
  for (const auto& n : after.nodes()) {
    if (n.name() != second) continue;
    for (const auto& old : before.nodes()) {
      if (old.name() == second) {
        EXPECT_EQ(n.state(), old.state()) << n.DebugString();
      }
    }
  }
}

// A rank whose collective failed because the group broke (a peer's connection reset before its
// control stream closed here) is the group's trouble: the job re-forms instead of failing, and
// its status says why and what it waits for.
TEST_F(ClusterTest, ACollectiveFailureReFormsTheGroupAndSaysWhatItWaitsFor) {
  auto a = Join("a");
  auto b = Join("b");
  auto job = *cluster_->SubmitJob(Spec(2));
  cluster_->Tick();
  const auto running = *cluster_->GetJob(job.id());
  Message(running.nodes(0), Failed(job.id(), 1,
                                   "all-reduce #12 on rank 0 failed: the connection to a peer broke (Connection "
                                   "reset by peer); waiting for rank 1",
                                   1, v1::JobFailed::COLLECTIVE));
  auto recovering = *cluster_->GetJob(job.id());
  EXPECT_EQ(recovering.state(), v1::RECOVERING);
  EXPECT_EQ(recovering.generation(), 2);
  cluster_->Tick();  // Neither trainer has reported idle yet.
  recovering = *cluster_->GetJob(job.id());
  EXPECT_NE(recovering.message().find("Connection reset by peer"), std::string::npos) << recovering.message();
  EXPECT_NE(recovering.message().find("waiting for 2 trainers of generation 1 to stop"), std::string::npos)
      << recovering.message();
  // A training error (diverged, bad data) still fails the job.
  for (const auto& n : running.nodes()) Idle(n, job.id(), 1);
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);
  Message(cluster_->GetJob(job.id())->nodes(0),
          Failed(job.id(), 2, "training diverged: the loss is nan at epoch 1 step 3", -1, v1::JobFailed::TRAINING));
  EXPECT_EQ(cluster_->GetJob(job.id())->state(), v1::FAILED);
}

// Recoveries used to be limited per lifetime: a long job failed at its fourth lost trainer even
// when the losses came hours apart with a replacement ready. Now: per window.
TEST_F(ClusterTest, RecoveriesAreLimitedPerWindowAndAFailedJobResumesFromItsCheckpoint) {
  auto a = Join("a");
  auto job = *cluster_->SubmitJob(Spec(1));
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);
  // Generation g breaks (a collective failure); the trainer reports idle; the group re-forms.
  auto break_generation = [&](int64_t generation) {
    Message("a", Failed(job.id(), generation, "all-reduce #3 on rank 0 failed: the connection to a peer broke", -1,
                        v1::JobFailed::COLLECTIVE));
    Idle("a", job.id(), generation);
    cluster_->Tick();
  };
  for (int64_t g = 1; g <= 5; ++g) {  // Two hours apart: more than 3 in the job's life, fine.
    now_ += absl::Hours(2);
    break_generation(g);
    ASSERT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING) << g;
  }
  EXPECT_EQ(cluster_->GetJob(job.id())->recoveries(), 5);
  now_ += absl::Hours(2);
  for (int64_t g = 6; g <= 8; ++g) {  // Three within minutes: still allowed...
    now_ += absl::Minutes(1);
    break_generation(g);
    ASSERT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING) << g;
  }
  now_ += absl::Minutes(1);
  break_generation(9);  // ...the fourth within the hour is not.
  auto failed = *cluster_->GetJob(job.id());
  ASSERT_EQ(failed.state(), v1::FAILED);
  EXPECT_NE(failed.message().find("gave up: 3 recoveries within 1h"), std::string::npos) << failed.message();

  // Resuming needs a checkpoint.
  auto refused = cluster_->ResumeJob(job.id());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("before its first checkpoint"), std::string::npos) << refused.status();
  ASSERT_TRUE(StoreCheckpoint(job.id()).ok());
  auto resumed = cluster_->ResumeJob(job.id());
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->state(), v1::RUNNING);  // "a" was idle: scheduled at once.
  EXPECT_EQ(resumed->generation(), 10);
  const auto events = *state_->JobEvents(job.id());
  EXPECT_TRUE(std::any_of(events.begin(), events.end(), [](const std::string& e) {
    return e.find("resumed by an administrator from its checkpoint (it had failed: ") != std::string::npos;
  }));
  const auto assignments = a->assignments();
  ASSERT_FALSE(assignments.empty());
  EXPECT_EQ(assignments.back().generation(), 10);
  EXPECT_TRUE(assignments.back().resume());
  EXPECT_EQ(cluster_->ResumeJob(job.id()).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cluster_->ResumeJob("job-77").status().code(), absl::StatusCode::kNotFound);
  // A fresh window after the resume: three more recoveries are allowed.
  break_generation(10);
  EXPECT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);

  // Success deletes the job's checkpoint.
  Message("a", Finished(job.id(), 11, 0));
  EXPECT_EQ(cluster_->GetJob(job.id())->state(), v1::SUCCEEDED);
  EXPECT_FALSE(artifacts_->HasCheckpoint(job.id()));
}

TEST_F(ClusterTest, CancellingAJobDeletesItsCheckpoint) {
  auto job = *cluster_->SubmitJob(Spec(1));
  ASSERT_TRUE(StoreCheckpoint(job.id()).ok());
  ASSERT_TRUE(artifacts_->HasCheckpoint(job.id()));
  ASSERT_TRUE(cluster_->CancelJob(job.id()).ok());
  EXPECT_FALSE(artifacts_->HasCheckpoint(job.id()));
  EXPECT_EQ(cluster_->ResumeJob(job.id()).status().code(), absl::StatusCode::kFailedPrecondition);
}

// A coordinator about to stop asks each running job's rank 0 for a checkpoint and waits for it,
// so the restart repeats no work (a SIGTERM used to throw away everything since the last epoch).
TEST_F(ClusterTest, CheckpointRunningJobsAsksRankZeroAndWaitsForItsReport) {
  auto a = Join("a");
  auto b = Join("b");
  auto job = *cluster_->SubmitJob(Spec(2));
  cluster_->Tick();
  const auto running = *cluster_->GetJob(job.id());
  ASSERT_EQ(running.state(), v1::RUNNING);
  const std::string rank0 = running.nodes(0), rank1 = running.nodes(1);
  std::pair<int, int> result{-1, -1};
  std::thread stopping([&] { result = cluster_->CheckpointRunningJobs(absl::Minutes(5)); });
  // Wait (as rank 0 would) for the request, then report the checkpoint.
  std::optional<v1::CheckpointNow> request;
  while (!request.has_value()) {
    for (const auto& m : channels_[rank0]->sent()) {
      if (m.has_checkpoint()) request = m.checkpoint();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(request->job_id(), job.id());
  EXPECT_EQ(request->generation(), 1);
  for (const auto& m : channels_[rank1]->sent()) EXPECT_FALSE(m.has_checkpoint());
  v1::TrainerMessage saved;
  saved.mutable_checkpointed()->set_job_id(job.id());
  saved.mutable_checkpointed()->set_generation(1);
  saved.mutable_checkpointed()->set_global_step(42);
  Message(rank0, saved);
  stopping.join();
  EXPECT_EQ(result, std::make_pair(1, 1));
  EXPECT_EQ(cluster_->GetJob(job.id())->checkpoint_global_step(), 42);
  // Nobody answers: it gives up at its timeout and says so.
  EXPECT_EQ(cluster_->CheckpointRunningJobs(absl::Milliseconds(50)), std::make_pair(0, 1));
}

// Elastic: a job with min_world_size 1 goes on with the trainer it has left when the other is
// lost (none free to replace it), from the checkpoint's place in the epoch, and grows back to
// two after an epoch when a trainer joins. The memberships are the shard ledger.
TEST_F(ClusterTest, AnElasticJobShrinksToTheTrainersLeftAndGrowsBackAfterAnEpoch) {
  auto a = Join("a");
  auto b = Join("b");
  v1::JobSpec spec = Spec(2);
  spec.set_min_world_size(1);
  spec.mutable_training()->set_epochs(3);
  auto job = *cluster_->SubmitJob(spec);
  cluster_->Tick();
  auto running = *cluster_->GetJob(job.id());
  ASSERT_EQ(running.state(), v1::RUNNING);
  const std::string rank0 = running.nodes(0), rank1 = running.nodes(1);
  ASSERT_TRUE(StoreCheckpoint(job.id()).ok());
  v1::TrainerMessage saved;
  saved.mutable_checkpointed()->set_job_id(job.id());
  saved.mutable_checkpointed()->set_generation(1);
  saved.mutable_checkpointed()->set_global_step(10);
  saved.mutable_checkpointed()->set_epoch_samples(40);
  Message(rank0, saved);

  cluster_->OnTrainerDisconnected(rank1, channels_[rank1].get());  // Lost; nobody free.
  cluster_->Tick();
  auto recovering = *cluster_->GetJob(job.id());
  EXPECT_EQ(recovering.state(), v1::RECOVERING);
  EXPECT_NE(recovering.message().find("waiting for 1 trainer of generation 1 to stop"), std::string::npos)
      << recovering.message();
  Idle(rank0, job.id(), 1);  // The survivor stopped: the job goes on with it alone.
  auto shrunk = *cluster_->GetJob(job.id());
  ASSERT_EQ(shrunk.state(), v1::RUNNING);
  EXPECT_EQ(shrunk.generation(), 2);
  ASSERT_EQ(shrunk.nodes_size(), 1);
  EXPECT_EQ(shrunk.nodes(0), rank0);
  const auto assignment = channels_[rank0]->assignments().back();
  EXPECT_EQ(assignment.world_size(), 1);
  EXPECT_TRUE(assignment.resume());
  ASSERT_EQ(shrunk.memberships_size(), 2);
  EXPECT_EQ(shrunk.memberships(0).world_size(), 2);
  EXPECT_EQ(shrunk.memberships(0).epoch_start_sample(), 0);
  EXPECT_EQ(shrunk.memberships(1).generation(), 2);
  EXPECT_EQ(shrunk.memberships(1).world_size(), 1);
  EXPECT_EQ(shrunk.memberships(1).epoch(), 0);
  EXPECT_EQ(shrunk.memberships(1).epoch_start_sample(), 40);
  EXPECT_NE(shrunk.memberships(1).reason().find(rank1 + " (rank 1) lost"), std::string::npos)
      << shrunk.memberships(1).reason();

  // A trainer joins; after the next epoch the job grows back (not counted as a recovery).
  auto c = Join("c");
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(job.id())->generation(), 2);  // Not mid-epoch.
  v1::TrainerMessage epoch;
  epoch.mutable_epoch()->set_job_id(job.id());
  epoch.mutable_epoch()->set_generation(2);
  epoch.mutable_epoch()->mutable_metrics()->set_epoch(0);
  Message(rank0, epoch);
  auto growing = *cluster_->GetJob(job.id());
  EXPECT_EQ(growing.state(), v1::RECOVERING);
  EXPECT_NE(growing.message().find("growing from 1 to up to 2 trainers after epoch 1"), std::string::npos)
      << growing.message();
  EXPECT_GE(channels_[rank0]->aborts(), 1);
  Idle(rank0, job.id(), 2);
  auto grown = *cluster_->GetJob(job.id());
  ASSERT_EQ(grown.state(), v1::RUNNING);
  EXPECT_EQ(grown.generation(), 3);
  EXPECT_EQ(grown.nodes_size(), 2);
  EXPECT_EQ(grown.recoveries(), 1);
  EXPECT_EQ(channels_["c"]->assignments().back().world_size(), 2);
}

// A tuning trial is an ordinary job: when its trainer is lost the cluster re-forms it on
// another, the tuner keeps reading the same trial, and its model (uploaded as any job's) is
// registered as the search's best with its lineage.
TEST_F(ClusterTest, ATuningTrialWhoseTrainerIsLostGoesOnElsewhereAndItsModelIsRegistered) {
  auto runner = ClusterTrialRunner(cluster_.get(), artifacts_.get());
  TunerOptions options;
  options.tick = absl::Hours(1);
  options.now = [this] { return now_; };
  auto tuner = *Tuner::Create(options, state_.get(), runner.get());
  Join("a");
  Join("b");
  v1::TuningSpec spec;
  spec.set_name("m");
  *spec.mutable_trial() = Spec(1);
  spec.mutable_trial()->mutable_training()->set_epochs(2);
  spec.set_strategy(v1::RANDOM_SEARCH);
  spec.set_max_trials(1);
  auto* lr = spec.add_space();
  lr->set_field("learning_rate");
  lr->set_kind(v1::SearchDimension::LOG_UNIFORM);
  lr->set_min(1e-3);
  lr->set_max(1e-1);
  auto submitted = tuner->Submit(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string id = submitted->id();
  const std::string job_id = submitted->trials(0).job_id();
  ASSERT_FALSE(job_id.empty());
  const std::string first = channels_["a"]->assignments().empty() ? "b" : "a";
  const std::string other = first == "a" ? "b" : "a";
  ASSERT_EQ(channels_[first]->assignments().size(), 1u);
  auto epoch = [&](const std::string& node, int64_t generation, int64_t e, double accuracy) {
    v1::TrainerMessage m;
    m.mutable_epoch()->set_job_id(job_id);
    m.mutable_epoch()->set_generation(generation);
    m.mutable_epoch()->mutable_metrics()->set_epoch(e);
    m.mutable_epoch()->mutable_metrics()->set_eval_accuracy(accuracy);
    Message(node, m);
  };
  epoch(first, 1, 0, 0.6);
  tuner->Tick();
  EXPECT_EQ(tuner->Get(id)->trials(0).objective_size(), 1);

  // The trainer is lost; the cluster runs generation 2 on the other one.
  cluster_->OnTrainerDisconnected(first, channels_[first].get());
  cluster_->Tick();
  tuner->Tick();
  auto t = *tuner->Get(id);
  EXPECT_EQ(t.trials(0).state(), v1::TRIAL_RUNNING);
  ASSERT_EQ(channels_[other]->assignments().size(), 1u);
  EXPECT_EQ(channels_[other]->assignments()[0].generation(), 2);
  EXPECT_EQ(cluster_->GetJob(job_id)->state(), v1::RUNNING);

  epoch(other, 2, 0, 0.62);
  epoch(other, 2, 1, 0.7);
  // Rank 0 uploads its model as a trainer does, then reports the job finished.
  const auto staging = dir_ / "staging-model";
  v1::ModelManifest manifest;
  manifest.set_name("m-trial-1");
  *manifest.mutable_model() = Spec(1).model();
  manifest.mutable_model()->set_num_classes(10);
  for (int c = 0; c < 10; ++c) manifest.add_class_names(absl::StrCat("class", c));
  *manifest.mutable_preprocess() = Spec(1).preprocess();
  manifest.mutable_preprocess()->set_channels(1);
  auto model = core::CreateModel(manifest.model());
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE(core::WriteArtifact(staging.string(), manifest, **model).ok());
  auto committed = artifacts_->CommitModel(staging.string(), job_id);
  ASSERT_TRUE(committed.ok()) << committed.status();
  v1::TrainerMessage finished = Finished(job_id, 2, 0);
  finished.mutable_finished()->mutable_model()->set_name(committed->name());
  finished.mutable_finished()->mutable_model()->set_version(committed->version());
  Message(other, finished);
  tuner->Tick();

  t = *tuner->Get(id);
  EXPECT_EQ(t.state(), v1::SUCCEEDED) << t.message();
  EXPECT_EQ(t.trials(0).state(), v1::TRIAL_COMPLETED);
  EXPECT_EQ(std::vector<double>(t.trials(0).objective().begin(), t.trials(0).objective().end()),
            (std::vector<double>{0.62, 0.7}));
  EXPECT_EQ(t.model_name(), "m");
  auto models = state_->LoadModels("m");
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->size(), 1u);
  const auto& lineage = (*models)[0].manifest().lineage();
  EXPECT_EQ(lineage.tuning_id(), id);
  EXPECT_EQ(lineage.trial(), 1);
  EXPECT_EQ(lineage.source_model(), "m-trial-1:1");
  EXPECT_EQ(lineage.job_id(), job_id);
  EXPECT_EQ(lineage.hyperparameters().at("learning_rate"), t.trials(0).params().at("learning_rate"));
  // The registered copy loads as a model of its own.
  v1::ArtifactRef ref;
  ref.set_kind(v1::ArtifactRef::MODEL);
  ref.set_name("m");
  auto resolved = artifacts_->Resolve(ref);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  auto loaded = core::LoadArtifact(resolved->first);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->manifest.name(), "m");
  EXPECT_EQ(loaded->manifest.lineage().trial(), 1);
}

}  // namespace
}  // namespace kennel::coordinator
