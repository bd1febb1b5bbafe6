#include "core/job_spec.h"
#include "core/model_spec.h"

#include <gtest/gtest.h>

#include <limits>

namespace kennel::core {
namespace {

v1::JobSpec Minimal() {
  v1::JobSpec spec;
  spec.set_name("fashion");
  spec.set_world_size(2);
  spec.mutable_model()->set_architecture(v1::SMALL_CNN);
  spec.mutable_model()->set_num_classes(10);
  spec.mutable_model()->set_in_channels(1);
  spec.mutable_preprocess()->set_height(28);
  spec.mutable_preprocess()->set_width(28);
  spec.mutable_dataset()->set_format(v1::DatasetIndex::IDX);
  spec.mutable_dataset()->set_root("/usr/share/datasets/fashion-mnist");
  return spec;
}

TEST(JobSpecTest, DefaultsAreFilled) {
  auto spec = NormalizeJobSpec(Minimal());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->training().batch_size(), 64);
  EXPECT_EQ(spec->training().optimizer(), v1::SGD);
  EXPECT_DOUBLE_EQ(spec->training().momentum(), 0.9);
  EXPECT_EQ(spec->backend(), "gloo");
  EXPECT_EQ(spec->dataset().eval_split(), "test");
  EXPECT_EQ(spec->preprocess().channels(), 1);
  EXPECT_EQ(spec->training().bucket_cap_bytes(), 25 << 20);
}

TEST(JobSpecTest, BadFieldsAreNamed) {
  auto expect_bad = [](v1::JobSpec spec, const std::string& field) {
    auto r = NormalizeJobSpec(spec);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status();
  };
  v1::JobSpec s = Minimal();
  s.set_name("bad name/..");
  expect_bad(s, "name");
  s = Minimal();
  s.mutable_training()->set_batch_size(-3);
  expect_bad(s, "batch_size");
  s = Minimal();
  s.set_backend("mpi");
  expect_bad(s, "backend");
  s = Minimal();
  s.mutable_preprocess()->set_height(32);
  expect_bad(s, "28x28");
  s = Minimal();
  s.mutable_dataset()->clear_root();
  expect_bad(s, "dataset.root");
  s = Minimal();
  s.mutable_training()->set_mixed_precision(true);
  expect_bad(s, "mixed_precision");
  s = Minimal();
  s.mutable_training()->set_freeze_backbone(true);
  expect_bad(s, "freeze_backbone");
  s = Minimal();
  s.mutable_training()->set_gradient_compression(static_cast<v1::GradientCompression>(7));
  expect_bad(s, "gradient_compression");
  s = Minimal();
  s.mutable_training()->set_powersgd_rank(0);
  expect_bad(s, "powersgd_rank");
  s.mutable_training()->set_powersgd_rank(65);
  expect_bad(s, "powersgd_rank");
  s = Minimal();
  s.mutable_training()->set_powersgd_warmup_steps(-1);
  expect_bad(s, "powersgd_warmup_steps");
  s = Minimal();
  s.mutable_model()->set_architecture(v1::AOTINDUCTOR);
  expect_bad(s, "a compiled package is served, not trained");
}

// proto3 zero used to mean "unset": momentum 0 became 0.9, batch 0 became 64.
TEST(JobSpecTest, ZeroMeansZeroOrIsRefusedNeverADefault) {
  v1::JobSpec s = Minimal();
  s.mutable_training()->set_momentum(0);
  s.mutable_training()->set_weight_decay(0);
  auto spec = NormalizeJobSpec(s);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->training().momentum(), 0.0);
  EXPECT_TRUE(spec->training().has_momentum());

  auto expect_bad = [](v1::JobSpec spec, const std::string& field) {
    auto r = NormalizeJobSpec(spec);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status();
  };
  s = Minimal();
  s.mutable_training()->set_batch_size(0);
  expect_bad(s, "training.batch_size");
  s = Minimal();
  s.mutable_training()->set_epochs(0);
  expect_bad(s, "training.epochs");
  s = Minimal();
  s.mutable_training()->set_learning_rate(0);
  expect_bad(s, "training.learning_rate");
  s = Minimal();
  s.set_world_size(0);
  expect_bad(s, "world_size");
  s = Minimal();
  s.mutable_training()->set_data_workers(0);
  expect_bad(s, "training.data_workers");
}

TEST(JobSpecTest, NonFiniteHyperparametersAreRefused) {
  auto expect_bad = [](v1::JobSpec spec, const std::string& field) {
    auto r = NormalizeJobSpec(spec);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status();
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  v1::JobSpec s = Minimal();
  s.mutable_training()->set_learning_rate(nan);
  expect_bad(s, "learning_rate");
  s = Minimal();
  s.mutable_training()->set_momentum(nan);
  expect_bad(s, "momentum");
  s = Minimal();
  s.mutable_training()->set_weight_decay(nan);
  expect_bad(s, "weight_decay");
  s = Minimal();
  s.mutable_training()->set_weight_decay(inf);
  expect_bad(s, "weight_decay");
  s = Minimal();
  s.mutable_training()->set_schedule(v1::STEP);
  s.mutable_training()->set_step_gamma(nan);
  expect_bad(s, "step_");
}

TEST(JobSpecTest, LearningRateSchedules) {
  v1::TrainingSpec t;
  t.set_learning_rate(0.1);
  t.set_epochs(4);
  t.set_schedule(v1::STEP);
  t.set_step_epochs(2);
  t.set_step_gamma(0.5);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 0, 10), 0.1);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 19, 10), 0.1);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 20, 10), 0.05);
  t.set_schedule(v1::COSINE);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 0, 10), 0.1);
  EXPECT_NEAR(LearningRateAt(t, 20, 10), 0.05, 1e-12);
  EXPECT_NEAR(LearningRateAt(t, 40, 10), 0.0, 1e-12);
  t.set_schedule(v1::CONSTANT);
  t.set_warmup_steps(4);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 0, 10), 0.02);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 3, 10), 0.08);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 4, 10), 0.1);
}

TEST(ModelRefTest, NameColonVersionAndNothingElse) {
  auto ref = ParseModelRef("dogs.v2:12");
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->name, "dogs.v2");
  EXPECT_EQ(ref->version, 12);
  for (const char* bad : {"", "dogs", "dogs:", ":3", "dogs:0", "dogs:-1", "dogs:x"}) {
    EXPECT_FALSE(ParseModelRef(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace kennel::core
