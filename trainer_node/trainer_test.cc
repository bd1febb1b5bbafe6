#include "trainer_node/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <map>
#include <thread>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "core/ml/dataset.h"
#include "core/files.h"
#include "core/job_spec.h"
#include "core/ml/artifact.h"
#include "core/testing/paths.h"
#include "trainer_node/grad_sync.h"

namespace kennel::trainer {
namespace {

// The first n samples of a Fashion-MNIST split.
v1::DatasetIndex Subset(const std::string& split, int n) {
  v1::DatasetIndex index = *core::IndexFashionMnist(core::kDebianFashionMnistRoot, split);
  index.mutable_samples()->DeleteSubrange(n, index.samples_size() - n);
  return index;
}

v1::JobSpec SmallCnnSpec(int world, int epochs) {
  v1::JobSpec spec;
  spec.set_name("test");
  spec.set_world_size(world);
  spec.mutable_model()->set_architecture(v1::SMALL_CNN);
  spec.mutable_model()->set_num_classes(10);
  spec.mutable_model()->set_in_channels(1);
  spec.mutable_preprocess()->set_height(28);
  spec.mutable_preprocess()->set_width(28);
  spec.mutable_preprocess()->add_mean(0.2860f);
  spec.mutable_preprocess()->add_std(0.3530f);
  spec.mutable_dataset()->set_format(v1::DatasetIndex::IDX);
  spec.mutable_dataset()->set_root(core::kDebianFashionMnistRoot);
  spec.mutable_training()->set_epochs(epochs);
  spec.mutable_training()->set_batch_size(32);
  spec.mutable_training()->set_seed(11);
  spec.mutable_training()->set_data_workers(1);
  spec.mutable_training()->set_collective_timeout_s(60);
  return *core::NormalizeJobSpec(spec);
}

// The same job with the user's own model: a scripted CNN for 1x28x28 and 10 classes
// (tests/fixtures/make_torchvision_fixtures.py, scripted_fashion.pt).
v1::JobSpec ScriptedSpec(int world, int epochs) {
  v1::JobSpec spec = SmallCnnSpec(world, epochs);
  spec.mutable_model()->set_architecture(v1::TORCHSCRIPT);
  spec.mutable_training()->set_model_file(core::testing::FixtureDir() + "/scripted_fashion.pt");
  return *core::NormalizeJobSpec(spec);
}

// SHA-256 over the parameters alone (batch-norm statistics are each rank's own between the
// per-step broadcasts, as in DDP).
std::string ParametersDigest(const TrainableModel& model) {
  std::string bytes;
  for (const auto& p : model.Parameters()) {
    const torch::Tensor t = p.detach().contiguous().cpu();
    bytes.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel() * t.element_size()));
  }
  return core::Sha256Hex(bytes);
}

// Runs `rank_body` on two threads, each rank with its own Gloo communicator of one group.
void OnTwoRanks(const std::function<void(int rank, Communicator* comm)>& rank_body) {
  InMemoryKeyValueStore store;
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = CreateGlooCommunicator({.rank = r, .world_size = 2, .store = &store});
      ASSERT_TRUE(comm.ok()) << comm.status();
      rank_body(r, comm->get());
    });
  }
  for (auto& t : ranks) t.join();
}

// `spec` trained on two ranks: each rank's results, each rank's digest after every step
// (`digest` of the model), and rank 0's epoch metrics.
struct TwoRankRun {
  std::vector<absl::StatusOr<TrainingResult>> results{2, absl::UnknownError("not run")};
  std::vector<std::vector<std::string>> digests{2};
  std::vector<v1::EpochMetrics> epochs;
};
TwoRankRun TrainOnTwoRanks(const v1::JobSpec& spec, const v1::DatasetIndex& train, const v1::DatasetIndex& eval,
                           std::string (*digest)(const TrainableModel&)) {
  TwoRankRun out;
  OnTwoRanks([&](int r, Communicator* comm) {
    TrainingRun run{.spec = spec, .rank = r, .world_size = 2, .train = &train,
                    .eval = &eval, .dataset_root = core::kDebianFashionMnistRoot, .comm = comm};
    run.after_step = [&, r](int64_t, const TrainableModel& model) { out.digests[r].push_back(digest(model)); };
    if (r == 0) run.on_epoch = [&](const v1::EpochMetrics& m) { out.epochs.push_back(m); };
    out.results[r] = Train(run);
  });
  return out;
}

std::string StateDigest(const TrainableModel& model) { return ParamDigest(model); }

// Both ranks of `run` finished, each recorded `steps` digests, equal after every step, and the
// parameters moved.
void ExpectRanksIdenticalAfterEveryStep(const TwoRankRun& run, size_t steps) {
  ASSERT_TRUE(run.results[0].ok()) << run.results[0].status();
  ASSERT_TRUE(run.results[1].ok()) << run.results[1].status();
  ASSERT_EQ(run.digests[0].size(), steps);
  EXPECT_EQ(run.digests[0], run.digests[1]);
  EXPECT_NE(run.digests[0].front(), run.digests[0].back());  // The parameters did change.
}

TEST(TrainerTest, TwoRanksHoldBitIdenticalParametersAfterEveryStepAndLearn) {
  const v1::DatasetIndex train = Subset("train", 4000), eval = Subset("test", 1000);
  const TwoRankRun run = TrainOnTwoRanks(SmallCnnSpec(2, 2), train, eval, &StateDigest);
  // 4000 samples / 2 ranks / batch 32 = 63 steps per epoch.
  ASSERT_NO_FATAL_FAILURE(ExpectRanksIdenticalAfterEveryStep(run, 126));
  const auto& [results, digests, epochs] = run;
  EXPECT_EQ(results[0]->param_digest, results[1]->param_digest);
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_EQ(epochs[1].eval_count(), 1000);  // Every evaluation sample counted once.
  EXPECT_GT(epochs[1].eval_accuracy(), 0.6);  // Chance is 0.1.
  EXPECT_LT(epochs[1].train_loss(), epochs[0].train_loss());
  // The step timeline: every step counted, its parts adding up to the whole, and each bucket
  // ready before its all-reduce starts, which starts before it ends.
  const v1::StepTimeline& t = epochs[1].timeline();
  EXPECT_EQ(t.steps(), 63);
  EXPECT_NEAR(t.data_ms() + t.broadcast_ms() + t.forward_ms() + t.backward_ms() + t.sync_wait_ms() + t.optimizer_ms(),
              t.step_ms(), 1e-6 * t.step_ms());
  EXPECT_GT(t.backward_ms(), 0);
  ASSERT_EQ(t.buckets_size(), 2);  // fc and fc1 (over the first bucket's 1 MiB), then the convolutions.
  int64_t bytes = 0;
  for (const auto& p : results[0]->model->parameters()) bytes += p.numel() * 4;
  EXPECT_EQ(t.buckets(0).bytes() + t.buckets(1).bytes(), bytes);
  for (const auto& b : t.buckets()) {
    EXPECT_GE(b.ready_ms(), 0);
    EXPECT_LE(b.ready_ms(), b.reduce_start_ms());
    EXPECT_LE(b.reduce_start_ms(), b.reduce_end_ms());
  }
  EXPECT_LE(t.buckets(0).reduce_end_ms(), t.buckets(1).reduce_start_ms());  // One at a time, in order.
}

// A TorchScript module (with batch norm) goes through the same data-parallel path: both
// ranks hold identical parameters after every step, it learns, and it is written back as
// TorchScript.
TEST(TrainerTest, AScriptedModuleTrainsOnTwoRanksWithIdenticalParameters) {
  const v1::DatasetIndex train = Subset("train", 4000), eval = Subset("test", 1000);
  const TwoRankRun run = TrainOnTwoRanks(ScriptedSpec(2, 2), train, eval, &ParametersDigest);
  ASSERT_NO_FATAL_FAILURE(ExpectRanksIdenticalAfterEveryStep(run, 126));
  const auto& [results, digests, epochs] = run;
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_GT(epochs[1].eval_accuracy(), 0.6);  // Chance is 0.1.
  EXPECT_EQ(results[0]->model, nullptr);      // Not a built-in Classifier.
  // Batch-norm statistics too: every rank ends with rank 0's (the registered model's).
  EXPECT_EQ(results[0]->param_digest, results[1]->param_digest);
  // Registered as TorchScript: the artifact loads as a module with the trained weights.
  const std::string dir = ::testing::TempDir() + "/scripted-artifact-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  v1::ModelManifest manifest;
  manifest.set_name("scripted");
  *manifest.mutable_model() = ScriptedSpec(2, 2).model();
  for (int c = 0; c < 10; ++c) manifest.add_class_names(std::to_string(c));
  *manifest.mutable_preprocess() = ScriptedSpec(2, 2).preprocess();
  ASSERT_TRUE(results[0]->trained->WriteArtifact(dir, manifest).ok());
  auto loaded = core::LoadArtifact(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_NE(loaded->script, nullptr);
  EXPECT_EQ(loaded->manifest.scripted().output(), v1::LOGITS);
  EXPECT_EQ(ParamDigest(ScriptedModel(loaded->script)), results[0]->param_digest);
}

// Gradients compressed to fp16 or bf16 on the wire: a scripted module's ranks stay identical
// after every step too (each rank applies the same decompressed mean), and it still learns.
TEST(TrainerTest, AScriptedModuleTrainsWithCompressedGradients) {
  const v1::DatasetIndex train = Subset("train", 2000), eval = Subset("test", 500);
  for (const v1::GradientCompression compression : {v1::FP16, v1::BF16}) {
    v1::JobSpec spec = ScriptedSpec(2, 1);
    spec.mutable_training()->set_gradient_compression(compression);
    SCOPED_TRACE(v1::GradientCompression_Name(compression));
    const TwoRankRun run = TrainOnTwoRanks(spec, train, eval, &ParametersDigest);
    ASSERT_NO_FATAL_FAILURE(ExpectRanksIdenticalAfterEveryStep(run, 32));  // 2000 / 2 / 32.
    ASSERT_EQ(run.epochs.size(), 1u);
    EXPECT_GT(run.epochs[0].eval_accuracy(), 0.3);  // Chance is 0.1.
  }
}

TEST(TrainerTest, AFrozenModuleOrOneWithTheWrongOutputIsRefusedBeforeTraining) {
  const v1::DatasetIndex train = Subset("train", 64), eval = Subset("test", 64);
  InMemoryKeyValueStore store;
  auto comm = *CreateGlooCommunicator({.rank = 0, .world_size = 1, .store = &store});
  TrainingRun run{.spec = ScriptedSpec(1, 1), .train = &train, .eval = &eval,
                  .dataset_root = core::kDebianFashionMnistRoot, .comm = comm.get()};
  // Frozen (no parameters), for 3x32x32 inputs and 7 classes.
  run.spec.mutable_training()->set_model_file(core::testing::FixtureDir() + "/scripted_cnn_frozen.pt");
  absl::Status s = Train(run).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("no parameters to train"), std::string::npos) << s;
  // Trainable, but its input and classes are not the job's.
  run.spec.mutable_training()->set_model_file(core::testing::FixtureDir() + "/scripted_cnn.pt");
  s = Train(run).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("refuses input [2, 1, 28, 28]"), std::string::npos) << s;
}

TEST(TrainerTest, AScriptedRunResumedFromACheckpointEndsLikeAnUninterruptedOne) {
  const v1::DatasetIndex train = Subset("train", 1000), eval = Subset("test", 200);
  const std::string dir = ::testing::TempDir() + "/scripted_resume_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  InMemoryKeyValueStore store;
  auto comm = *CreateGlooCommunicator({.rank = 0, .world_size = 1, .store = &store});
  TrainingRun run{.spec = ScriptedSpec(1, 2), .train = &train, .eval = &eval,
                  .dataset_root = core::kDebianFashionMnistRoot, .comm = comm.get()};
  run.spec.mutable_training()->set_checkpoint_every_steps(10);
  auto uninterrupted = Train(run);
  ASSERT_TRUE(uninterrupted.ok()) << uninterrupted.status();
  LocalCheckpointStore checkpoints(dir);
  std::atomic<bool> cancelled{false};
  run.checkpoints = &checkpoints;
  run.cancelled = &cancelled;
  run.after_step = [&](int64_t step, const TrainableModel&) { if (step == 45) cancelled = true; };
  EXPECT_EQ(Train(run).status().code(), absl::StatusCode::kCancelled);
  cancelled = false;
  run.after_step = nullptr;
  run.resume = true;
  auto resumed = Train(run);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->param_digest, uninterrupted->param_digest);
  EXPECT_EQ(resumed->metrics.validation_accuracy(), uninterrupted->metrics.validation_accuracy());
}

TEST(TrainerTest, ResumedRunEndsExactlyLikeAnUninterruptedOne) {
  const v1::DatasetIndex train = Subset("train", 1500), eval = Subset("test", 500);
  const std::string dir = ::testing::TempDir() + "/resume_test";
  std::filesystem::remove_all(dir);
  InMemoryKeyValueStore store;
  auto comm = *CreateGlooCommunicator({.rank = 0, .world_size = 1, .store = &store});
  TrainingRun run{.spec = SmallCnnSpec(1, 3), .train = &train, .eval = &eval,
                  .dataset_root = core::kDebianFashionMnistRoot, .comm = comm.get()};
  run.spec.mutable_training()->set_checkpoint_every_steps(10);
  std::vector<v1::EpochMetrics> uninterrupted_epochs;
  run.on_epoch = [&](const v1::EpochMetrics& m) { uninterrupted_epochs.push_back(m); };
  auto uninterrupted = Train(run);
  ASSERT_TRUE(uninterrupted.ok()) << uninterrupted.status();

  // Stopped during the second epoch, after a mid-epoch checkpoint, then resumed.
  LocalCheckpointStore checkpoints(dir);
  std::atomic<bool> cancelled{false};
  run.checkpoints = &checkpoints;
  run.cancelled = &cancelled;
  run.on_epoch = nullptr;
  run.after_step = [&](int64_t step, const TrainableModel&) { if (step == 65) cancelled = true; };
  EXPECT_EQ(Train(run).status().code(), absl::StatusCode::kCancelled);
  cancelled = false;
  run.after_step = nullptr;
  run.resume = true;
  std::vector<int64_t> resumed_steps;
  run.on_step = [&](const v1::StepMetrics& m) { resumed_steps.push_back(m.global_step()); };
  run.report_interval = absl::ZeroDuration();
  std::vector<v1::EpochMetrics> resumed_epochs;
  run.on_epoch = [&](const v1::EpochMetrics& m) { resumed_epochs.push_back(m); };
  auto resumed = Train(run);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_FALSE(resumed_steps.empty());
  EXPECT_EQ(resumed_steps.front(), 61);  // Newest checkpoint: after step 60.
  EXPECT_EQ(resumed->param_digest, uninterrupted->param_digest);
  EXPECT_EQ(resumed->metrics.validation_accuracy(), uninterrupted->metrics.validation_accuracy());
  // The resumed epoch (the second) reports the whole epoch: its loss sums the steps before the
  // checkpoint too (the same additions in the same order), and its time includes theirs.
  ASSERT_EQ(uninterrupted_epochs.size(), 3u);
  ASSERT_EQ(resumed_epochs.size(), 2u);
  EXPECT_EQ(resumed_epochs[0].epoch(), 1);
  EXPECT_EQ(resumed_epochs[0].train_loss(), uninterrupted_epochs[1].train_loss());
  EXPECT_EQ(resumed_epochs[1].train_loss(), uninterrupted_epochs[2].train_loss());
  // 47 steps of 32 (the last one short): images/s x seconds counts every image of the epoch.
  EXPECT_NEAR(resumed_epochs[0].images_per_second() * resumed_epochs[0].seconds(), 1500, 1e-6);
  EXPECT_GT(resumed_epochs[0].elapsed_seconds(), resumed_epochs[0].seconds());
}

TEST(TrainerTest, CheckpointNowIsTakenAtTheNextPollOnEveryRank) {
  const v1::DatasetIndex train = Subset("train", 1000), eval = Subset("test", 200);
  const std::string dir = ::testing::TempDir() + "/checkpoint_now_test";
  std::filesystem::remove_all(dir);
  std::atomic<bool> checkpoint_now{false};
  std::vector<TrainingPosition> saved;
  std::vector<absl::StatusOr<TrainingResult>> results(2, absl::UnknownError("not run"));
  OnTwoRanks([&](int r, Communicator* comm) {
    LocalCheckpointStore checkpoints(absl::StrCat(dir, "/", r));
    TrainingRun run{.spec = SmallCnnSpec(2, 1), .rank = r, .world_size = 2, .train = &train,
                    .eval = &eval, .dataset_root = core::kDebianFashionMnistRoot, .comm = comm,
                    .checkpoints = &checkpoints};
    if (r == 0) {
      run.checkpoint_now = &checkpoint_now;
      run.on_checkpoint = [&](const TrainingPosition& p) { saved.push_back(p); };
      run.after_step = [&](int64_t step, const TrainableModel&) { if (step == 5) checkpoint_now = true; };
    }
    results[r] = Train(run);
  });
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  ASSERT_TRUE(results[1].ok()) << results[1].status();
  // Asked after step 5: taken at step 8 (the next multiple of kCheckpointPollSteps), then the
  // epoch end (16 steps of 32 per rank). Nothing else: the default interval is 120 s.
  ASSERT_EQ(saved.size(), 2u);
  EXPECT_EQ(saved[0].global_step, 8);
  EXPECT_EQ(saved[0].step_in_epoch, 8);
  EXPECT_EQ(saved[0].epoch_images, 8 * 32 * 2);
  EXPECT_EQ(saved[0].epoch_loss_count, 8 * 32 * 2);  // Summed over both ranks.
  EXPECT_GT(saved[0].epoch_loss_sum, 0);
  EXPECT_EQ(saved[1].epoch, 1);
  EXPECT_EQ(saved[1].global_step, 16);
  EXPECT_FALSE(checkpoint_now.load());
  // Only rank 0 writes.
  EXPECT_TRUE(std::filesystem::exists(dir + "/0/checkpoint.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/1/checkpoint.bin"));
}

// Elastic training: 2 ranks checkpoint after 5 steps and stop at 7; one rank resumes. The
// samples the final model learned from (the first 5 steps of each rank, then the resumed
// rank's) are every sample of the epoch exactly once.
TEST(TrainerTest, ResumingOnFewerRanksTrainsOnEverySampleOfTheEpochExactlyOnce) {
  const v1::DatasetIndex train = Subset("train", 1024), eval = Subset("test", 200);
  const std::string dir = ::testing::TempDir() + "/elastic_test";
  std::filesystem::remove_all(dir);
  std::vector<std::vector<std::vector<int64_t>>> batches(2);
  std::vector<absl::Status> stopped(2);
  OnTwoRanks([&](int r, Communicator* comm) {
    LocalCheckpointStore checkpoints(absl::StrCat(dir, "/", r));
    std::atomic<bool> cancelled{false};
    TrainingRun run{.spec = SmallCnnSpec(2, 1), .rank = r, .world_size = 2, .train = &train,
                    .eval = &eval, .dataset_root = core::kDebianFashionMnistRoot, .comm = comm,
                    .checkpoints = &checkpoints, .cancelled = &cancelled};
    run.spec.mutable_training()->set_checkpoint_every_steps(5);
    run.on_batch_samples = [&, r](const std::vector<int64_t>& samples) { batches[r].push_back(samples); };
    run.after_step = [&](int64_t step, const TrainableModel&) { if (step == 7) cancelled = true; };
    stopped[r] = Train(run).status();
  });
  ASSERT_EQ(stopped[0].code(), absl::StatusCode::kCancelled) << stopped[0];
  ASSERT_EQ(stopped[1].code(), absl::StatusCode::kCancelled) << stopped[1];
  std::map<int64_t, int> learned;  // Sample -> times the final model trained on it.
  for (int r = 0; r < 2; ++r) {
    ASSERT_GE(batches[r].size(), 5u);
    for (size_t b = 0; b < 5; ++b) {  // Up to the checkpoint; steps 6-7 are repeated.
      for (int64_t sample : batches[r][b]) learned[sample]++;
    }
  }
  // One rank goes on alone from rank 0's checkpoint.
  InMemoryKeyValueStore store;
  auto comm = *CreateGlooCommunicator({.rank = 0, .world_size = 1, .store = &store});
  LocalCheckpointStore checkpoints(dir + "/0");
  TrainingRun run{.spec = SmallCnnSpec(1, 1), .train = &train, .eval = &eval,
                  .dataset_root = core::kDebianFashionMnistRoot, .comm = comm.get(),
                  .checkpoints = &checkpoints, .resume = true};
  std::vector<v1::StepMetrics> steps;
  run.report_interval = absl::ZeroDuration();
  run.on_step = [&](const v1::StepMetrics& m) { steps.push_back(m); };
  run.on_batch_samples = [&](const std::vector<int64_t>& samples) {
    for (int64_t sample : samples) learned[sample]++;
  };
  std::vector<v1::EpochMetrics> epochs;
  run.on_epoch = [&](const v1::EpochMetrics& m) { epochs.push_back(m); };
  auto resumed = Train(run);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_EQ(learned.size(), 1024u);
  for (const auto& [sample, count] : learned) EXPECT_EQ(count, 1) << sample;
  // Progress in the new group's steps: 5 steps of 2 x 32 = 10 steps of 32 done, 22 to go.
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps.front().step(), 11);
  EXPECT_EQ(steps.front().steps_per_epoch(), 32);
  EXPECT_EQ(steps.front().global_step(), 6);  // Optimizer steps of the run so far.
  ASSERT_EQ(epochs.size(), 1u);
  EXPECT_EQ(epochs[0].train_samples(), 1024);
}

TEST(TrainerTest, CorruptOrTruncatedCheckpointIsRefused) {
  const v1::JobSpec spec = SmallCnnSpec(1, 1);
  auto model = *core::CreateModel(spec.model());
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  std::string blob = *SerializeCheckpoint(*model, optimizer, {2, 5, 77});
  TrainingPosition position;
  ASSERT_TRUE(RestoreCheckpoint(blob, *model, optimizer, &position).ok());
  EXPECT_EQ(position.epoch, 2);
  EXPECT_EQ(position.step_in_epoch, 5);
  EXPECT_EQ(position.global_step, 77);

  std::string flipped = blob;
  flipped[flipped.size() / 2] ^= 0x01;
  auto status = RestoreCheckpoint(flipped, *model, optimizer, &position);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("checksum"), std::string::npos);
  status = RestoreCheckpoint(blob.substr(0, blob.size() - 100), *model, optimizer, &position);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("truncated"), std::string::npos);
  EXPECT_EQ(RestoreCheckpoint("junk", *model, optimizer, &position).code(), absl::StatusCode::kDataLoss);
  // A checkpoint of another architecture does not fit.
  v1::ModelSpec other = spec.model();
  other.set_num_classes(5);
  auto small = *core::CreateModel(other);
  torch::optim::SGD other_opt(small->parameters(), torch::optim::SGDOptions(0.1));
  EXPECT_EQ(RestoreCheckpoint(blob, *small, other_opt, &position).code(),
            absl::StatusCode::kInvalidArgument);
}

// One optimizer step on a fixed batch, so the optimizer holds state.
void TakeStep(core::Classifier& model, torch::optim::Optimizer& optimizer) {
  torch::manual_seed(3);
  optimizer.zero_grad();
  torch::nn::functional::cross_entropy(model.forward(torch::rand({4, 1, 28, 28})),
                                       torch::tensor({0, 1, 2, 3}))
      .backward();
  optimizer.step();
}

std::vector<torch::Tensor> Snapshot(core::Classifier& model) {
  std::vector<torch::Tensor> out;
  for (const auto& p : model.parameters()) out.push_back(p.detach().clone());
  return out;
}

void ExpectSameParameters(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

// A restored run continues exactly as the saved one would have: same parameters after the
// next step, which needs the optimizer's state (momentum, Adam's moments and step count).
void ExpectRestoreContinuesTheRun(
    const std::function<std::unique_ptr<torch::optim::Optimizer>(core::Classifier&)>& make_optimizer,
    bool legacy) {
  const v1::JobSpec spec = SmallCnnSpec(1, 1);
  torch::manual_seed(1);
  auto model = *core::CreateModel(spec.model());
  auto optimizer = make_optimizer(*model);
  TakeStep(*model, *optimizer);
  TrainingPosition saved;
  saved.epoch = 2;
  saved.step_in_epoch = 5;
  saved.global_step = 77;
  saved.world_size = 3;
  saved.stage_start = 640;
  saved.epoch_loss_sum = 12.5;
  saved.elapsed_seconds = 99;
  auto blob = legacy ? SerializeLegacyCheckpoint(BuiltinModel(model), *optimizer, saved)
                     : SerializeCheckpoint(*model, *optimizer, saved);
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(blob->substr(0, 8), legacy ? "KNLCKPT1" : "KNLCKPT2");

  torch::manual_seed(2);  // Other initial weights, a fresh optimizer.
  auto restored = *core::CreateModel(spec.model());
  auto restored_optimizer = make_optimizer(*restored);
  TrainingPosition position;
  ASSERT_TRUE(RestoreCheckpoint(*blob, *restored, *restored_optimizer, &position).ok());
  EXPECT_EQ(position.epoch, 2);
  EXPECT_EQ(position.step_in_epoch, 5);
  EXPECT_EQ(position.global_step, 77);
  EXPECT_EQ(position.world_size, 3);
  EXPECT_EQ(position.stage_start, 640);
  EXPECT_EQ(position.epoch_loss_sum, 12.5);
  EXPECT_EQ(position.elapsed_seconds, 99);
  ExpectSameParameters(Snapshot(*model), Snapshot(*restored));

  TakeStep(*model, *optimizer);
  TakeStep(*restored, *restored_optimizer);
  ExpectSameParameters(Snapshot(*model), Snapshot(*restored));
}

std::unique_ptr<torch::optim::Optimizer> Sgd(core::Classifier& model) {
  return std::make_unique<torch::optim::SGD>(model.parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
}

std::unique_ptr<torch::optim::Optimizer> AdamW(core::Classifier& model) {
  return std::make_unique<torch::optim::AdamW>(model.parameters(), torch::optim::AdamWOptions(0.01));
}

TEST(CheckpointTest, SgdWithMomentumContinuesExactly) { ExpectRestoreContinuesTheRun(Sgd, false); }

TEST(CheckpointTest, AdamWContinuesExactly) { ExpectRestoreContinuesTheRun(AdamW, false); }

TEST(CheckpointTest, ACheckpointInTheFormerFormatStillRestores) {
  ExpectRestoreContinuesTheRun(Sgd, true);
  ExpectRestoreContinuesTheRun(AdamW, true);
}

TEST(CheckpointTest, AnOptimizerOfAnotherKindOrShapeIsRefusedAndNothingChanges) {
  const v1::JobSpec spec = SmallCnnSpec(1, 1);
  auto model = *core::CreateModel(spec.model());
  auto adamw = AdamW(*model);
  TakeStep(*model, *adamw);
  const std::string blob = *SerializeCheckpoint(*model, *adamw, {});

  torch::manual_seed(5);
  auto other = *core::CreateModel(spec.model());
  auto sgd = Sgd(*other);
  const auto before = Snapshot(*other);
  TrainingPosition position;
  position.epoch = 9;
  auto status = RestoreCheckpoint(blob, *other, *sgd, &position);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("optimizer entries fit no parameter"), std::string::npos) << status;
  ExpectSameParameters(before, Snapshot(*other));
  EXPECT_EQ(position.epoch, 9);
  EXPECT_TRUE(sgd->state().empty());
}

TEST(GradientSynchronizerTest, AveragesGradientsOverRanksInSeveralBuckets) {
  InMemoryKeyValueStore store;
  std::vector<std::vector<torch::Tensor>> grads(2);
  std::vector<int> buckets(2);
  auto make_model = [] {
    // 600x600 layers of 1.4 MB: the 1 MiB first bucket closes after the last two layers,
    // then each layer fills a 100 kB-capped bucket of its own.
    torch::nn::Sequential m(torch::nn::Linear(600, 600), torch::nn::ReLU(), torch::nn::Linear(600, 600),
                            torch::nn::ReLU(), torch::nn::Linear(600, 600), torch::nn::Linear(600, 4));
    for (auto& p : m->parameters()) p.detach().fill_(0.01);
    return m;
  };
  auto input = [](int rank) { return torch::full({2, 600}, rank + 1.0f); };
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = *CreateGlooCommunicator({.rank = r, .world_size = 2, .store = &store});
      auto model = make_model();
      auto sync = *GradientSynchronizer::Create(model->parameters(), comm.get(), 100'000);
      buckets[r] = sync->num_buckets();
      sync->BeginStep();
      model->forward(input(r)).sum().backward();
      ASSERT_TRUE(sync->FinishStep().ok());
      for (auto& p : model->parameters()) grads[r].push_back(p.grad().clone());
    });
  }
  for (auto& t : ranks) t.join();
  EXPECT_EQ(buckets[0], 3);
  // Expected: the mean of each rank's own gradient.
  std::vector<torch::Tensor> expected;
  for (int r = 0; r < 2; ++r) {
    auto model = make_model();
    model->forward(input(r)).sum().backward();
    auto params = model->parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      if (r == 0) expected.push_back(params[i].grad() / 2);
      else expected[i] += params[i].grad() / 2;
    }
  }
  for (size_t i = 0; i < expected.size(); ++i) {
    // The same float32 gradients averaged in another order: a rounding or two apart.
    EXPECT_TRUE(torch::allclose(grads[0][i], expected[i], 1e-5, 1e-6)) << i;
    EXPECT_TRUE(torch::equal(grads[0][i], grads[1][i])) << i;
  }
}

// Compressed all-reduce: each rank's gradient halved, rounded to 16 bits, summed over ranks
// (in float32, rounded once) and widened back; every rank gets the same bits.
void ExpectCompressedMean(torch::ScalarType wire) {
  InMemoryKeyValueStore store;
  std::vector<std::vector<torch::Tensor>> grads(2);
  // Made here, not on the rank threads: torch's seed is global.
  auto make_model = [] {
    torch::manual_seed(0);
    return torch::nn::Sequential(torch::nn::Linear(300, 200), torch::nn::ReLU(), torch::nn::Linear(200, 7));
  };
  std::vector<torch::Tensor> inputs;
  for (int r = 0; r < 2; ++r) {
    torch::manual_seed(10 + r);
    inputs.push_back(torch::randn({4, 300}));
  }
  std::vector<torch::nn::Sequential> models = {make_model(), make_model()};
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = *CreateGlooCommunicator({.rank = r, .world_size = 2, .store = &store});
      auto& model = models[r];
      auto sync = GradientSynchronizer::Create(model->parameters(), comm.get(), 100'000, wire);
      ASSERT_TRUE(sync.ok()) << sync.status();
      (*sync)->BeginStep();
      model->forward(inputs[r]).sum().backward();
      ASSERT_TRUE((*sync)->FinishStep().ok());
      for (auto& p : model->parameters()) grads[r].push_back(p.grad().clone());
    });
  }
  for (auto& t : ranks) t.join();
  std::vector<std::vector<torch::Tensor>> local(2);
  for (int r = 0; r < 2; ++r) {
    auto model = make_model();
    model->forward(inputs[r]).sum().backward();
    for (auto& p : model->parameters()) local[r].push_back(p.grad().clone());
  }
  ASSERT_EQ(grads[0].size(), local[0].size());
  bool rounded = false;
  for (size_t i = 0; i < local[0].size(); ++i) {
    const torch::Tensor halves = (local[0][i] / 2).to(wire).to(torch::kFloat32) + (local[1][i] / 2).to(wire).to(torch::kFloat32);
    const torch::Tensor expected = halves.to(wire).to(torch::kFloat32);
    EXPECT_TRUE(torch::equal(grads[0][i], expected)) << i;
    EXPECT_TRUE(torch::equal(grads[0][i], grads[1][i])) << i;
    // And near the float32 mean: each of the three roundings is off by at most half a unit in
    // the last place of the magnitudes it rounds (eps = 2^-11 for float16, 2^-8 for bfloat16).
    const torch::Tensor exact = (local[0][i] + local[1][i]) / 2;
    const double eps = wire == torch::kHalf ? 1.0 / 2048 : 1.0 / 256;
    const torch::Tensor bound = (local[0][i].abs() + local[1][i].abs()) / 2 * (2 * eps) + 1e-7;
    EXPECT_TRUE(((grads[0][i] - exact).abs() <= bound).all().item<bool>())
        << i << ": largest difference " << (grads[0][i] - exact).abs().max().item<float>();
    rounded = rounded || !torch::equal(grads[0][i], exact);
  }
  EXPECT_TRUE(rounded) << "the gradients did not travel in 16 bits";
}

TEST(GradientSynchronizerTest, Fp16CompressionAveragesInHalfTheBytes) { ExpectCompressedMean(torch::kHalf); }

// PowerSGD on two ranks whose gradients stay the same step after step (the parameters are not
// updated): the warm-up steps give the exact mean; then the 200x400 weight travels as rank-4
// factors (every rank applies the same bits, of rank 4, far from the mean in one step), the
// bias and the 7x200 weight (under 65,536 elements) as float32; and error feedback makes the
// applied gradients' running mean converge to the true mean.
TEST(GradientSynchronizerTest, PowerSgdSendsRankRFactorsAndErrorFeedbackRecoversTheMean) {
  InMemoryKeyValueStore store;
  auto make_model = [] {
    torch::manual_seed(0);
    return torch::nn::Sequential(torch::nn::Linear(400, 200), torch::nn::ReLU(), torch::nn::Linear(200, 7));
  };
  std::vector<torch::Tensor> inputs;
  for (int r = 0; r < 2; ++r) {
    torch::manual_seed(20 + r);
    inputs.push_back(torch::randn({32, 400}));
  }
  std::vector<torch::nn::Sequential> models = {make_model(), make_model()};
  constexpr int kWarmup = 2, kSteps = 60;
  // [rank][step][param]
  std::vector<std::vector<std::vector<torch::Tensor>>> applied(2);
  std::vector<int64_t> sent(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = *CreateGlooCommunicator({.rank = r, .world_size = 2, .store = &store});
      auto& model = models[r];
      auto sync = GradientSynchronizer::Create(model->parameters(), comm.get(), 25 << 20, torch::kFloat32,
                                               {.rank = 4, .warmup_steps = kWarmup, .seed = 3});
      ASSERT_TRUE(sync.ok()) << sync.status();
      for (int step = 0; step < kSteps; ++step) {
        (*sync)->BeginStep();
        model->forward(inputs[r]).sum().backward();
        ASSERT_TRUE((*sync)->FinishStep().ok());
        applied[r].emplace_back();
        for (auto& p : model->parameters()) applied[r].back().push_back(p.grad().clone());
      }
      sent[r] = (*sync)->LastStepTimes().at(0).wire_bytes;
    });
  }
  for (auto& t : ranks) t.join();
  ASSERT_EQ(applied[0].size(), static_cast<size_t>(kSteps));
  std::vector<torch::Tensor> mean;
  {
    std::vector<std::vector<torch::Tensor>> local(2);
    for (int r = 0; r < 2; ++r) {
      auto model = make_model();
      model->forward(inputs[r]).sum().backward();
      for (auto& p : model->parameters()) local[r].push_back(p.grad().clone());
    }
    for (size_t i = 0; i < local[0].size(); ++i) mean.push_back((local[0][i] + local[1][i]) / 2);
  }
  // Parameters: 0 = 200x400 weight (compressed), 1 = its bias, 2 = 7x200 weight, 3 = bias.
  auto relative = [](const torch::Tensor& a, const torch::Tensor& b) { return ((a - b).norm() / b.norm()).item<double>(); };
  for (int step = 0; step < kSteps; ++step) {
    for (size_t i = 0; i < mean.size(); ++i) {
      EXPECT_TRUE(torch::equal(applied[0][step][i], applied[1][step][i])) << "step " << step << " param " << i;
      if (step < kWarmup || i != 0) {
        EXPECT_LT(relative(applied[0][step][i], mean[i]), 1e-5) << "step " << step << " param " << i;
      }
    }
  }
  const torch::Tensor first = applied[0][kWarmup][0];
  EXPECT_EQ(torch::linalg_matrix_rank(first).item<int64_t>(), 4);
  const double one_step = relative(first, mean[0]);
  EXPECT_GT(one_step, 0.2) << "the inputs should give a gradient far from rank 4";
  torch::Tensor running = torch::zeros_like(mean[0]);
  for (int step = kWarmup; step < kSteps; ++step) running += applied[0][step][0];
  running /= (kSteps - kWarmup);
  const double averaged = relative(running, mean[0]);
  EXPECT_LT(averaged, one_step / 4) << "one step " << one_step << ", running mean " << averaged;
  // Bytes per step: 4 x (200 + 400) factors' floats, 200 + 1400 + 7 sent whole, 4 bytes each.
  EXPECT_EQ(sent[0], 4 * (4 * (200 + 400) + 200 + 7 * 200 + 7));
}

TEST(GradientSynchronizerTest, Bf16CompressionAveragesInHalfTheBytes) { ExpectCompressedMean(torch::kBFloat16); }

}  // namespace
}  // namespace kennel::trainer
