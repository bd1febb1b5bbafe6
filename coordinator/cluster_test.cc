#include "coordinator/cluster.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <optional>

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
  v1::TrainerMessage idle;
  idle.mutable_idle()->set_job_id(job.id());
  idle.mutable_idle()->set_generation(1);
  Message("a", idle);
  Message("b", idle);
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
  v1::TrainerMessage idle;
  idle.mutable_idle()->set_job_id(job.id());
  idle.mutable_idle()->set_generation(1);
  Message("a", idle);
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
  EXPECT_EQ(r.state(), v1::RECOVERING);
  EXPECT_EQ(r.generation(), 2);
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
  v1::TrainerMessage failed;
  auto* f = failed.mutable_failed();
  f->set_job_id(job.id());
  f->set_generation(1);
  f->set_rank(0);
  f->set_error("all-reduce #12 on rank 0 timed out after 1m, waiting for rank 1 (...)");
  f->set_missing_rank(1);
  Message(running.nodes(0), failed);
  auto ended = *cluster_->GetJob(job.id());
  EXPECT_EQ(ended.state(), v1::FAILED);
  EXPECT_NE(ended.message().find("rank 1 is trainer " + running.nodes(1)), std::string::npos) << ended.message();
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
  v1::TrainerMessage failed;
  auto* f = failed.mutable_failed();
  f->set_job_id(job.id());
  f->set_generation(1);
  f->set_rank(0);
  f->set_error("all-reduce #12 on rank 0 failed: the connection to a peer broke (Connection reset by peer); "
               "waiting for rank 1");
  f->set_missing_rank(1);
  f->set_cause(v1::JobFailed::COLLECTIVE);
  Message(running.nodes(0), failed);
  auto recovering = *cluster_->GetJob(job.id());
  EXPECT_EQ(recovering.state(), v1::RECOVERING);
  EXPECT_EQ(recovering.generation(), 2);
  cluster_->Tick();  // Neither trainer has reported idle yet.
  recovering = *cluster_->GetJob(job.id());
  EXPECT_NE(recovering.message().find("Connection reset by peer"), std::string::npos) << recovering.message();
  EXPECT_NE(recovering.message().find("waiting for 2 free trainers (0 free, 2 connected)"), std::string::npos)
      << recovering.message();
  // A training error (diverged, bad data) still fails the job.
  v1::TrainerMessage idle;
  for (const auto& n : running.nodes()) {
    idle.mutable_idle()->set_job_id(job.id());
    idle.mutable_idle()->set_generation(1);
    Message(n, idle);
  }
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job.id())->state(), v1::RUNNING);
  f->set_generation(2);
  f->set_cause(v1::JobFailed::TRAINING);
  f->set_missing_rank(-1);
  f->set_error("training diverged: the loss is nan at epoch 1 step 3");
  Message(cluster_->GetJob(job.id())->nodes(0), failed);
  EXPECT_EQ(cluster_->GetJob(job.id())->state(), v1::FAILED);
}

}  // namespace
}  // namespace kennel::coordinator
