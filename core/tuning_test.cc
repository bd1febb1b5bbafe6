#include "core/tuning.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "absl/strings/numbers.h"
#include "core/testing/tuning_specs.h"

namespace kennel::core {
namespace {

namespace v1 = kennel::v1;

using testing::SeedSearch;

TEST(TuningSpecTest, DefaultsAreFilledIn) {
  auto spec = NormalizeTuningSpec(SeedSearch());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->strategy(), v1::ASHA);
  EXPECT_EQ(spec->objective(), v1::MAXIMIZE_EVAL_ACCURACY);
  EXPECT_EQ(spec->parallelism(), 1);
  EXPECT_EQ(spec->min_epochs(), 1);
  EXPECT_EQ(spec->reduction_factor(), 3);
  EXPECT_EQ(spec->trial().training().batch_size(), 64);  // The trial job's own defaults too.
}

// Each bad spec is refused before anything runs, with a message naming what is wrong.
TEST(TuningSpecTest, BadSpecsAreRefusedSayingWhy) {
  struct Case {
    std::string name;
    std::function<void(v1::TuningSpec&)> change;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"empty range", [](auto& s) { s.mutable_space(2)->set_max(0.5); }, "is empty"},
      {"reversed range", [](auto& s) { s.mutable_space(2)->set_min(0.99); s.mutable_space(2)->set_max(0.5); }, "is empty"},
      {"log range with 0", [](auto& s) { s.mutable_space(0)->set_min(0); }, "log-uniform range must be above 0"},
      {"log range below 0", [](auto& s) { s.mutable_space(0)->set_min(-1); }, "log-uniform range must be above 0"},
      {"unknown field", [](auto& s) { s.mutable_space(0)->set_field("learning_rat"); }, "not a training field"},
      {"a message field", [](auto& s) { s.mutable_space(0)->set_field("model"); }, "not a training field"},
      {"epochs", [](auto& s) { s.mutable_space(0)->set_field("epochs"); s.mutable_space(0)->set_kind(v1::SearchDimension::INT_UNIFORM); }, "epochs a trial trains"},
      {"seed", [](auto& s) { s.mutable_space(0)->set_field("seed"); }, "seed"},
      {"twice", [](auto& s) { *s.add_space() = s.space(0); }, "given twice"},
      {"no kind", [](auto& s) { s.mutable_space(0)->set_kind(v1::SearchDimension::KIND_UNSPECIFIED); }, "no kind"},
      {"no choices", [](auto& s) { s.mutable_space(1)->clear_choices(); }, "no choices"},
      {"a choice twice", [](auto& s) { s.mutable_space(1)->add_choices("32"); }, "a choice twice"},
      {"choice not an integer", [](auto& s) { s.mutable_space(1)->add_choices("big"); }, "not an integer"},
      {"choice refused by the job", [](auto& s) { s.mutable_space(1)->add_choices("0"); }, "batch"},
      {"range end refused by the job", [](auto& s) { s.mutable_space(2)->set_max(1.5); }, "momentum"},
      {"real range on an integer", [](auto& s) { s.mutable_space(1)->clear_choices(); s.mutable_space(1)->set_kind(v1::SearchDimension::UNIFORM); s.mutable_space(1)->set_min(32); s.mutable_space(1)->set_max(256); }, "not a number"},
      {"fractional integer range", [](auto& s) { s.mutable_space(1)->clear_choices(); s.mutable_space(1)->set_kind(v1::SearchDimension::INT_UNIFORM); s.mutable_space(1)->set_min(32.5); s.mutable_space(1)->set_max(256); }, "integer ends"},
      {"unknown enum", [](auto& s) { auto* d = s.add_space(); d->set_field("optimizer"); d->set_kind(v1::SearchDimension::CHOICE); d->add_choices("ADAM"); }, "one of SGD, ADAMW"},
      {"no budget", [](auto& s) { s.set_max_trials(0); }, "needs a budget"},
      {"negative budget", [](auto& s) { s.set_max_seconds(-1); }, "negative"},
      {"budget under one rung", [](auto& s) { s.set_min_epochs(3); s.set_max_trial_epochs(2); }, "less than one trial's first rung"},
      {"random budget under one run", [](auto& s) { s.set_strategy(v1::RANDOM_SEARCH); s.set_max_trial_epochs(8); }, "first run (9 epochs)"},
      {"first rung past the epochs", [](auto& s) { s.set_min_epochs(10); }, "first rung"},
      {"reduction factor 1", [](auto& s) { s.set_reduction_factor(1); }, "reduction factor"},
      {"empty space", [](auto& s) { s.clear_space(); }, "search space is empty"},
      {"bad trial job", [](auto& s) { s.mutable_trial()->mutable_training()->set_epochs(0); }, "the trial job"},
      {"no name", [](auto& s) { s.clear_name(); }, "name"},
      {"a name that is no model name", [](auto& s) { s.set_name("../x"); }, "the tuning job's name"},
  };
  for (const auto& c : cases) {
    v1::TuningSpec spec = SeedSearch();
    c.change(spec);
    auto normalized = NormalizeTuningSpec(spec);
    ASSERT_FALSE(normalized.ok()) << c.name;
    EXPECT_EQ(normalized.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(normalized.status().message().find(c.says), std::string::npos)
        << c.name << ": " << normalized.status().message();
  }
}

TEST(TuningSampleTest, TrialsAreReproducibleAndInsideTheirRanges) {
  const v1::TuningSpec spec = *NormalizeTuningSpec(SeedSearch());
  std::set<std::string> batches;
  int below_geometric_mean = 0;
  const int n = 400;
  for (int i = 0; i < n; ++i) {
    const TrialParams p = SampleTrial(spec, i);
    EXPECT_EQ(p, SampleTrial(spec, i));  // The same trial whenever it is drawn.
    ASSERT_EQ(p.size(), 3u);
    double lr, momentum;
    ASSERT_TRUE(absl::SimpleAtod(p.at("learning_rate"), &lr));
    ASSERT_TRUE(absl::SimpleAtod(p.at("momentum"), &momentum));
    EXPECT_GE(lr, 1e-3);
    EXPECT_LE(lr, 1e-1);
    EXPECT_GE(momentum, 0.5);
    EXPECT_LE(momentum, 0.99);
    below_geometric_mean += lr < 1e-2;
    batches.insert(p.at("batch_size"));
  }
  EXPECT_EQ(batches, (std::set<std::string>{"32", "64", "128", "256"}));
  // Log-uniform: half the draws below the range's geometric mean (uniform would put 9 %).
  EXPECT_GT(below_geometric_mean, n * 4 / 10);
  EXPECT_LT(below_geometric_mean, n * 6 / 10);
  v1::TuningSpec other = spec;
  other.set_seed(8);
  EXPECT_NE(SampleTrial(spec, 0), SampleTrial(other, 0));
  EXPECT_NE(SampleTrial(spec, 0), SampleTrial(spec, 1));
}

TEST(TuningSampleTest, TheTrialJobCarriesItsValuesAndSeed) {
  const v1::TuningSpec spec = *NormalizeTuningSpec(SeedSearch());
  auto job = TrialJob(spec, 5, {{"learning_rate", "0.0316"}, {"batch_size", "128"}, {"momentum", "0.9"}});
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->name(), "fmnist-trial-5");
  EXPECT_DOUBLE_EQ(job->training().learning_rate(), 0.0316);
  EXPECT_EQ(job->training().batch_size(), 128);
  EXPECT_DOUBLE_EQ(job->training().momentum(), 0.9);
  EXPECT_EQ(job->training().seed(), 12u);  // 7 + 5.
  EXPECT_EQ(job->training().epochs(), 9);
  EXPECT_EQ(TrialJob(spec, 1, {{"batch_size", "0"}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrialJob(spec, 1, {{"learning_rat", "0.1"}}).status().code(), absl::StatusCode::kInvalidArgument);
}

// As with any job, a trial model without num_classes takes the dataset's (the coordinator counts
// them for each trial's job): the spec is checked as if it had them and keeps 0.
TEST(TuningSpecTest, ATrialWithoutClassesLeavesThemToTheDataset) {
  v1::TuningSpec spec = SeedSearch();
  spec.mutable_trial()->mutable_model()->clear_num_classes();
  auto normalized = NormalizeTuningSpec(spec);
  ASSERT_TRUE(normalized.ok()) << normalized.status();
  EXPECT_EQ(normalized->trial().model().num_classes(), 0);
  EXPECT_EQ(normalized->trial().name(), "fmnist");
  auto job = TrialJob(*normalized, 2, SampleTrial(*normalized, 2));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->model().num_classes(), 0);
}

TEST(AshaTest, RungsAreTheFirstRungTimesEtaBelowTheTrialsEpochs) {
  v1::TuningSpec spec = *NormalizeTuningSpec(SeedSearch());  // 9 epochs, r 1, eta 3.
  EXPECT_EQ(AshaRungs(spec), (std::vector<int>{1, 3}));
  spec.mutable_trial()->mutable_training()->set_epochs(10);
  EXPECT_EQ(AshaRungs(spec), (std::vector<int>{1, 3, 9}));
  spec.set_min_epochs(2);
  spec.set_reduction_factor(2);
  EXPECT_EQ(AshaRungs(spec), (std::vector<int>{2, 4, 8}));
  spec.set_strategy(v1::RANDOM_SEARCH);
  EXPECT_TRUE(AshaRungs(spec).empty());
}

TEST(AshaTest, OnlyTheTopThirdOfARungGoesOn) {
  EXPECT_TRUE(AshaPromotes({}, 0.1, 3, true));  // The first at a rung always goes on.
  const std::vector<double> recorded = {0.5, 0.6, 0.7, 0.8, 0.9};
  // The 2/3 quantile of the five recorded before is 0.767.
  EXPECT_FALSE(AshaPromotes(recorded, 0.75, 3, true));
  EXPECT_TRUE(AshaPromotes(recorded, 0.85, 3, true));
  EXPECT_TRUE(AshaPromotes(recorded, 0.95, 3, true));
  EXPECT_FALSE(AshaPromotes(recorded, 0.4, 3, true));
  // Losses: smaller is better.
  EXPECT_TRUE(AshaPromotes(recorded, 0.4, 3, false));
  EXPECT_FALSE(AshaPromotes(recorded, 0.75, 3, false));
  // eta 2: the top half.
  EXPECT_TRUE(AshaPromotes({0.1, 0.2, 0.3}, 0.25, 2, true));
  EXPECT_FALSE(AshaPromotes({0.1, 0.2, 0.3}, 0.15, 2, true));
}

}  // namespace
}  // namespace kennel::core
