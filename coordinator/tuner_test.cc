#include "coordinator/tuner.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/testing/tuning_specs.h"
#include "core/tuning.h"

namespace kennel::coordinator {
namespace {

// Trials as the tests make them: jobs whose epochs, success and failure the test reports.
class FakeRunner : public TrialRunner {
 public:
  absl::StatusOr<v1::JobStatus> Submit(v1::JobSpec spec) override {
    v1::JobStatus job;
    job.set_id(absl::StrCat("job-", next_++));
    *job.mutable_spec() = std::move(spec);
    job.set_state(v1::RUNNING);
    job.set_created_unix_ms(created_unix_ms);
    jobs[job.id()] = job;
    submitted.push_back(job.id());
    return job;
  }
  absl::StatusOr<v1::JobStatus> Get(const std::string& id) override {
    auto it = jobs.find(id);
    if (it == jobs.end()) return absl::NotFoundError(id);
    return it->second;
  }
  absl::StatusOr<v1::JobStatus> Cancel(const std::string& id) override {
    auto& job = jobs.at(id);
    if (job.state() == v1::SUCCEEDED || job.state() == v1::FAILED || job.state() == v1::CANCELLED) {
      return absl::FailedPreconditionError("ended");
    }
    job.set_state(v1::CANCELLED);
    cancelled.push_back(id);
    return job;
  }
  std::vector<v1::JobStatus> Find(const std::string& name, int64_t since) override {
    std::vector<v1::JobStatus> out;
    for (const auto& id : submitted) {
      if (jobs[id].spec().name() == name && jobs[id].created_unix_ms() >= since) out.push_back(jobs[id]);
    }
    return out;
  }
  absl::StatusOr<v1::ModelVersion> Publish(const std::string& source_name, int64_t source_version,
                                           const std::string& name, const v1::Lineage& lineage,
                                           const std::string& job_id) override {
    v1::ModelVersion m;
    m.set_name(name);
    m.set_version(++published_versions);
    m.set_job_id(job_id);
    *m.mutable_manifest()->mutable_lineage() = lineage;
    m.mutable_manifest()->mutable_lineage()->set_source_model(absl::StrCat(source_name, ":", source_version));
    published.push_back(m);
    return m;
  }

  // The job of trial `number` (submitted in order) reports an epoch with `accuracy`.
  void Epoch(const std::string& id, double accuracy) {
    auto& job = jobs.at(id);
    auto* e = job.add_epochs();
    e->set_epoch(job.epochs_size() - 1);
    e->set_eval_accuracy(accuracy);
    e->set_eval_loss(1 - accuracy);
  }
  void Succeed(const std::string& id) {
    auto& job = jobs.at(id);
    job.set_state(v1::SUCCEEDED);
    job.set_model_name(job.spec().name());
    job.set_model_version(1);
  }
  void Fail(const std::string& id, const std::string& why) {
    jobs.at(id).set_state(v1::FAILED);
    jobs.at(id).set_message(why);
  }
  std::vector<std::string> Running() {
    std::vector<std::string> out;
    for (const auto& id : submitted) {
      if (jobs[id].state() == v1::RUNNING) out.push_back(id);
    }
    return out;
  }

  std::map<std::string, v1::JobStatus> jobs;
  std::vector<std::string> submitted, cancelled;
  std::vector<v1::ModelVersion> published;
  int published_versions = 0;
  int64_t created_unix_ms = 0;

 private:
  int next_ = 1;
};

// The seed's search (core/testing/tuning_specs.h) with the strategy and epochs given, no budget.
v1::TuningSpec SeedSearch(v1::TuningStrategy strategy, int epochs) {
  v1::TuningSpec spec = core::testing::SeedSearch();
  spec.set_name("fashion-search");
  spec.clear_max_trials();
  spec.set_strategy(strategy);
  spec.mutable_trial()->mutable_training()->set_epochs(epochs);
  return spec;
}

class TunerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    runner_.created_unix_ms = absl::ToUnixMillis(now_);
    Open();
  }
  // (Re)starts the tuner over the same database and the same trials: a coordinator restart.
  void Open() {
    tuner_.reset();
    state_.reset();
    state_ = *StateStore::Open((dir_ / "state.db").string());
    TunerOptions options;
    options.tick = absl::Hours(1);  // The test steps the tuner itself.
    options.now = [this] { return now_; };
    tuner_ = *Tuner::Create(options, state_.get(), &runner_);
  }
  v1::TuningStatus Status(const std::string& id) { return *tuner_->Get(id); }
  const v1::Trial& TrialOf(const v1::TuningStatus& t, int number) { return t.trials(number - 1); }

  std::filesystem::path dir_;
  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
  FakeRunner runner_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<Tuner> tuner_;
};

// ASHA with eta 3 over 9 epochs judges at 1 and 3 epochs: a trial goes on only in the top third
// of those recorded at the rung before it, and one that does not is cancelled at once.
TEST_F(TunerTest, AshaPromotesTheTopThirdAtEachRungAndStopsTheRestAtOnce) {
  v1::TuningSpec spec = SeedSearch(v1::ASHA, 9);
  spec.set_max_trials(4);
  spec.set_parallelism(2);
  auto submitted = tuner_->Submit(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string id = submitted->id();
  ASSERT_EQ(runner_.submitted.size(), 2u);  // Parallelism 2.
  const std::string j1 = runner_.submitted[0], j2 = runner_.submitted[1];

  // The first at rung 1 goes on (nothing to compare with); the second, worse, is 1 of 2 but
  // below the 2/3 quantile: stopped.
  runner_.Epoch(j1, 0.70);
  tuner_->Tick();
  runner_.Epoch(j2, 0.60);
  tuner_->Tick();
  auto t = Status(id);
  ASSERT_EQ(TrialOf(t, 1).rungs_size(), 1);
  EXPECT_TRUE(TrialOf(t, 1).rungs(0).promoted());
  EXPECT_EQ(TrialOf(t, 1).state(), v1::TRIAL_RUNNING);
  ASSERT_EQ(TrialOf(t, 2).rungs_size(), 1);
  EXPECT_FALSE(TrialOf(t, 2).rungs(0).promoted());
  EXPECT_EQ(TrialOf(t, 2).rungs(0).judged_against(), 1);
  EXPECT_EQ(TrialOf(t, 2).state(), v1::TRIAL_STOPPED);
  EXPECT_EQ(runner_.cancelled, std::vector<std::string>{j2});  // Its trainers freed at once.
  EXPECT_NE(TrialOf(t, 2).message().find("top 1/3"), std::string::npos) << TrialOf(t, 2).message();
  // Its place went to trial 3 in the same step.
  ASSERT_EQ(runner_.submitted.size(), 3u);
  const std::string j3 = runner_.submitted[2];
  EXPECT_EQ(TrialOf(t, 3).job_id(), j3);

  // Trial 3 beats both at rung 1: promoted.
  runner_.Epoch(j3, 0.80);
  tuner_->Tick();
  EXPECT_TRUE(TrialOf(Status(id), 3).rungs(0).promoted());
  // Trial 1 reaches rung 3 first (alone there: promoted) and then completes.
  runner_.Epoch(j1, 0.75);
  runner_.Epoch(j1, 0.78);
  tuner_->Tick();
  EXPECT_TRUE(TrialOf(Status(id), 1).rungs(1).promoted());
  for (int e = 3; e < 9; ++e) runner_.Epoch(j1, 0.80 + e * 0.001);
  runner_.Succeed(j1);
  tuner_->Tick();
  t = Status(id);
  EXPECT_EQ(TrialOf(t, 1).state(), v1::TRIAL_COMPLETED);
  EXPECT_EQ(t.best_trial(), 1);
  // Trial 4 took trial 1's place (4 trials in all).
  ASSERT_EQ(runner_.submitted.size(), 4u);
  const std::string j4 = runner_.submitted[3];
  // Trial 3 at rung 3 with 0.77 < trial 1's 0.78: of two, not in the top third.
  runner_.Epoch(j3, 0.76);
  runner_.Epoch(j3, 0.77);
  tuner_->Tick();
  EXPECT_EQ(TrialOf(Status(id), 3).state(), v1::TRIAL_STOPPED);
  // Trial 4 is the best at rung 1 (promoted), then falls at rung 3.
  runner_.Epoch(j4, 0.90);
  tuner_->Tick();
  runner_.Epoch(j4, 0.5);
  runner_.Epoch(j4, 0.5);
  tuner_->Tick();
  t = Status(id);
  EXPECT_EQ(TrialOf(t, 4).state(), v1::TRIAL_STOPPED);
  EXPECT_EQ(runner_.submitted.size(), 4u);  // No fifth trial: max_trials.

  // Nothing runs, nothing may start: the best is registered under the tuning's name.
  EXPECT_EQ(t.state(), v1::SUCCEEDED) << t.message();
  EXPECT_EQ(t.trial_epochs(), 9 + 1 + 3 + 3);
  ASSERT_EQ(runner_.published.size(), 1u);
  const auto& model = runner_.published[0];
  EXPECT_EQ(model.name(), "fashion-search");
  EXPECT_EQ(model.job_id(), j1);
  EXPECT_EQ(model.manifest().lineage().tuning_id(), id);
  EXPECT_EQ(model.manifest().lineage().trial(), 1);
  EXPECT_EQ(model.manifest().lineage().source_model(), "fashion-search-trial-1:1");
  EXPECT_EQ(model.manifest().lineage().hyperparameters().at("learning_rate"),
            TrialOf(t, 1).params().at("learning_rate"));
  EXPECT_EQ(t.model_name(), "fashion-search");
  EXPECT_EQ(t.model_version(), 1);
  // Each trial's job trained with its recorded values and seed.
  for (const auto& trial : t.trials()) {
    const auto& training = runner_.jobs[trial.job_id()].spec().training();
    EXPECT_EQ(absl::StrCat(training.batch_size()), trial.params().at("batch_size"));
    EXPECT_EQ(training.seed(), 7u + static_cast<uint64_t>(trial.number()));
    EXPECT_EQ(trial.seed(), training.seed());
  }
}

// Random search: every trial trains all its epochs; a trial-epoch budget starts no trial that
// could not finish inside it.
TEST_F(TunerTest, RandomSearchTrainsEveryTrialWithinTheTrialEpochBudget) {
  v1::TuningSpec spec = SeedSearch(v1::RANDOM_SEARCH, 2);
  spec.set_max_trial_epochs(5);  // Room for two 2-epoch trials, not three.
  spec.set_parallelism(3);
  const std::string id = tuner_->Submit(spec)->id();
  ASSERT_EQ(runner_.submitted.size(), 2u);
  for (const auto& job : runner_.submitted) {
    runner_.Epoch(job, 0.5);
    tuner_->Tick();
  }
  EXPECT_EQ(Status(id).trials(0).rungs_size(), 0);  // No rungs: nothing stops early.
  runner_.Epoch(runner_.submitted[0], 0.6);
  runner_.Epoch(runner_.submitted[1], 0.65);
  runner_.Succeed(runner_.submitted[0]);
  runner_.Succeed(runner_.submitted[1]);
  tuner_->Tick();
  auto t = Status(id);
  EXPECT_EQ(runner_.submitted.size(), 2u);
  EXPECT_EQ(t.state(), v1::SUCCEEDED) << t.message();
  EXPECT_EQ(t.best_trial(), 2);
  EXPECT_DOUBLE_EQ(t.best_objective(), 0.65);
  EXPECT_EQ(t.trial_epochs(), 4);
}

// The wall-time budget stops running trials when it runs out; with no trial finished, the
// search fails saying no model was registered.
TEST_F(TunerTest, WhenTheWallTimeRunsOutRunningTrialsStop) {
  v1::TuningSpec spec = SeedSearch(v1::ASHA, 9);
  spec.set_max_seconds(600);
  const std::string id = tuner_->Submit(spec)->id();
  ASSERT_EQ(runner_.submitted.size(), 1u);
  runner_.Epoch(runner_.submitted[0], 0.7);
  now_ += absl::Seconds(599);
  tuner_->Tick();
  EXPECT_EQ(Status(id).state(), v1::RUNNING);
  now_ += absl::Seconds(2);
  tuner_->Tick();
  auto t = Status(id);
  EXPECT_EQ(t.state(), v1::FAILED);
  EXPECT_EQ(TrialOf(t, 1).state(), v1::TRIAL_CANCELLED);
  EXPECT_EQ(runner_.jobs[runner_.submitted[0]].state(), v1::CANCELLED);
  EXPECT_NE(t.message().find("no trial trained all its epochs"), std::string::npos) << t.message();
  EXPECT_NE(TrialOf(t, 1).message().find("600 s ran out"), std::string::npos) << TrialOf(t, 1).message();
  EXPECT_EQ(runner_.submitted.size(), 1u);
  EXPECT_TRUE(runner_.published.empty());
}

// A coordinator restart mid-search: the search continues from the database with the rung
// results it had, reading the trials' jobs (which carried on) again.
TEST_F(TunerTest, ARestartMidSearchContinuesWhereItWas) {
  v1::TuningSpec spec = SeedSearch(v1::ASHA, 3);
  spec.set_max_trials(3);
  const std::string id = tuner_->Submit(spec)->id();
  runner_.Epoch(runner_.submitted[0], 0.8);
  tuner_->Tick();
  const auto before = Status(id);
  ASSERT_EQ(TrialOf(before, 1).rungs_size(), 1);

  Open();  // Restart.
  auto t = Status(id);
  EXPECT_EQ(t.state(), v1::RUNNING);
  ASSERT_EQ(t.trials_size(), 1);
  EXPECT_EQ(TrialOf(t, 1).rungs(0).value(), 0.8);
  using Params = std::map<std::string, std::string>;
  EXPECT_EQ(Params(TrialOf(t, 1).params().begin(), TrialOf(t, 1).params().end()),
            Params(TrialOf(before, 1).params().begin(), TrialOf(before, 1).params().end()));
  // The job trained on meanwhile and finished.
  runner_.Epoch(runner_.submitted[0], 0.82);
  runner_.Epoch(runner_.submitted[0], 0.85);
  runner_.Succeed(runner_.submitted[0]);
  tuner_->Tick();
  t = Status(id);
  EXPECT_EQ(TrialOf(t, 1).state(), v1::TRIAL_COMPLETED);
  ASSERT_EQ(runner_.submitted.size(), 2u);  // Trial 2 started, judged against trial 1's rung.
  runner_.Epoch(runner_.submitted[1], 0.5);
  tuner_->Tick();
  t = Status(id);
  EXPECT_EQ(TrialOf(t, 2).state(), v1::TRIAL_STOPPED);
  EXPECT_EQ(TrialOf(t, 2).rungs(0).judged_against(), 1);
  // A new tuning job after the restart takes a fresh id.
  spec.set_name("another-search");
  auto another = tuner_->Submit(spec);
  ASSERT_TRUE(another.ok()) << another.status();
  EXPECT_NE(another->id(), id);
}

// A trial recorded just before a restart but whose job id was not: its job is found among the
// cluster's jobs (never submitted twice); one never submitted is submitted then.
TEST_F(TunerTest, ATrialRecordedButNotSubmittedBeforeARestartIsFoundOrSubmittedOnce) {
  v1::TuningSpec spec = SeedSearch(v1::ASHA, 3);
  spec.set_max_trials(2);
  spec.set_parallelism(2);
  const std::string id = tuner_->Submit(spec)->id();
  ASSERT_EQ(runner_.submitted.size(), 2u);
  tuner_.reset();
  // The database as a crash between recording a trial and recording its job would leave it:
  // trial 1's job exists (submitted), trial 2's does not.
  auto t = *state_->LoadTunings();
  ASSERT_EQ(t.size(), 1u);
  runner_.jobs.erase(runner_.submitted[1]);
  runner_.submitted.pop_back();
  for (auto& trial : *t[0].mutable_trials()) trial.clear_job_id();
  ASSERT_TRUE(state_->SaveTuning(t[0]).ok());
  Open();
  tuner_->Tick();
  auto after = Status(id);
  EXPECT_EQ(TrialOf(after, 1).job_id(), "job-1");
  ASSERT_EQ(runner_.submitted.size(), 2u);
  EXPECT_EQ(TrialOf(after, 2).job_id(), runner_.submitted[1]);
  EXPECT_EQ(runner_.jobs[runner_.submitted[1]].spec().name(), "fashion-search-trial-2");
}

// Trials that keep failing stop the search before it spends its budget; a failed trial's
// place goes to the next one until then.
TEST_F(TunerTest, ASpecWhoseTrialsKeepFailingStopsTheSearch) {
  v1::TuningSpec spec = SeedSearch(v1::ASHA, 3);
  spec.set_max_trials(16);
  const std::string id = tuner_->Submit(spec)->id();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(runner_.submitted.size(), static_cast<size_t>(i + 1));
    runner_.Fail(runner_.submitted.back(), "no such dataset on trainer t1");
    tuner_->Tick();
  }
  auto t = Status(id);
  EXPECT_EQ(t.state(), v1::FAILED);
  EXPECT_EQ(runner_.submitted.size(), 3u);
  EXPECT_NE(t.message().find("3 trials in a row failed"), std::string::npos) << t.message();
  EXPECT_NE(t.message().find("no such dataset"), std::string::npos) << t.message();
  EXPECT_EQ(TrialOf(t, 1).state(), v1::TRIAL_FAILED);
}

// Cancelling stops the running trials; the best finished trial is still registered.
TEST_F(TunerTest, CancellingStopsTheTrialsAndKeepsTheBestSoFar) {
  v1::TuningSpec spec = SeedSearch(v1::RANDOM_SEARCH, 1);
  spec.set_max_trials(5);
  const std::string id = tuner_->Submit(spec)->id();
  runner_.Epoch(runner_.submitted[0], 0.7);
  runner_.Succeed(runner_.submitted[0]);
  tuner_->Tick();
  ASSERT_EQ(runner_.submitted.size(), 2u);
  auto cancelled = tuner_->Cancel(id);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::CANCELLED);
  EXPECT_EQ(TrialOf(*cancelled, 2).state(), v1::TRIAL_CANCELLED);
  EXPECT_EQ(runner_.jobs[runner_.submitted[1]].state(), v1::CANCELLED);
  EXPECT_EQ(cancelled->model_name(), "fashion-search");
  tuner_->Tick();
  EXPECT_EQ(runner_.submitted.size(), 2u);
  EXPECT_EQ(tuner_->Cancel(id).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(tuner_->Cancel("tune-99").status().code(), absl::StatusCode::kNotFound);
  // Ended tuning jobs come back after a restart as they were.
  Open();
  EXPECT_EQ(Status(id).state(), v1::CANCELLED);
  EXPECT_EQ(Status(id).trials_size(), 2);
}

TEST_F(TunerTest, ABadSpecIsRefusedBeforeAnythingRuns) {
  v1::TuningSpec spec = SeedSearch(v1::ASHA, 9);
  spec.set_max_trials(4);
  spec.mutable_space(0)->set_min(0);
  auto refused = tuner_->Submit(spec);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("log-uniform"), std::string::npos) << refused.status();
  EXPECT_TRUE(runner_.submitted.empty());
  EXPECT_TRUE(tuner_->List(10).empty());
  // Two searches of one name at once would share their trials' job and model names.
  spec.mutable_space(0)->set_min(1e-3);
  ASSERT_TRUE(tuner_->Submit(spec).ok());
  EXPECT_EQ(tuner_->Submit(spec).status().code(), absl::StatusCode::kAlreadyExists);
}

// What a search records is on disk when Submit answers: the first trials with their jobs.
TEST_F(TunerTest, TheFirstTrialsJobsAreRecordedBeforeSubmitAnswers) {
  v1::TuningSpec spec = SeedSearch(v1::ASHA, 3);
  spec.set_max_trials(4);
  spec.set_parallelism(2);
  const std::string id = tuner_->Submit(spec)->id();
  auto stored = state_->LoadTunings();
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 1u);
  ASSERT_EQ((*stored)[0].trials_size(), 2);
  EXPECT_EQ((*stored)[0].trials(0).job_id(), runner_.submitted[0]);
  EXPECT_EQ((*stored)[0].trials(1).job_id(), runner_.submitted[1]);
  EXPECT_EQ((*stored)[0].id(), id);
}

}  // namespace
}  // namespace kennel::coordinator
