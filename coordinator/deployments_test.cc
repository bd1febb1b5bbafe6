#include "coordinator/deployments.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>

namespace kennel::coordinator {
namespace {

class DeploymentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One folder per test and process: ctest runs the tests of this suite side by side.
    const auto dir = std::filesystem::path(::testing::TempDir()) /
                     (std::string("deployments-") + ::testing::UnitTest::GetInstance()->current_test_info()->name() +
                      "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    state_ = *StateStore::Open((dir / "state.db").string());
  }
  // Registers the next version of "dogs" with these metrics.
  void Register(double test_accuracy, double train_loss, bool imported = false) {
    const int64_t version = *state_->NextModelVersion("dogs");
    v1::ModelVersion m;
    m.set_name("dogs");
    m.set_version(version);
    m.mutable_manifest()->mutable_metrics()->set_test_accuracy(test_accuracy);
    m.mutable_manifest()->mutable_metrics()->set_train_loss(train_loss);
    m.mutable_manifest()->mutable_metrics()->set_test_loss(train_loss);
    m.mutable_manifest()->mutable_lineage()->set_imported(imported);
    ASSERT_TRUE(state_->SaveModel(m).ok());
  }
  static v1::DeployRequest Request(int64_t version = 0, double min_accuracy = 0, const std::string& name = "dogs") {
    v1::DeployRequest r;
    r.set_name(name);
    r.set_version(version);
    r.set_min_accuracy(min_accuracy);
    return r;
  }
  std::unique_ptr<StateStore> state_;
};

// The default is the newest version fit to serve: a diverged newest one (NaN loss) is passed
// over, an accuracy floor is kept, and an imported model (no test accuracy of Kennel's) passes
// no floor. A version named is deployed as asked, if it exists.
TEST_F(DeploymentsTest, TheNewestFitVersionUnlessOneIsNamed) {
  Register(0.80, 0.5);
  Register(0.90, 0.3);
  Register(0.088, std::numeric_limits<double>::quiet_NaN());
  Register(0.99, 0.1, /*imported=*/true);
  Deployments d(state_.get());
  EXPECT_EQ(*d.ChooseVersion(Request()), 4);
  EXPECT_EQ(*d.ChooseVersion(Request(0, 0.85)), 2);
  EXPECT_EQ(*d.ChooseVersion(Request(0, 0.5)), 2);
  auto none = d.ChooseVersion(Request(0, 0.95));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("test accuracy >= 0.95"), std::string::npos) << none.status();
  EXPECT_EQ(*d.ChooseVersion(Request(3)), 3);
  EXPECT_EQ(d.ChooseVersion(Request(9)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(d.ChooseVersion(Request(0, 0, "cats")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(d.ChooseVersion(Request(0, 1.5)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d.ChooseVersion(Request(0, std::nan(""))).status().code(), absl::StatusCode::kInvalidArgument);
}

// One result per node, in order: its answer, or a timeout for a silent one. An answer from an
// earlier deploy of the same version does not count for the next.
TEST_F(DeploymentsTest, CollectReportsEveryNodeAndForgetsEarlierAnswers) {
  Deployments d(state_.get());
  d.Expect({"inf-1", "inf-2", "inf-3"}, "dogs", 2);
  d.OnResult("inf-3", "dogs", 2, "cannot load: out of memory");
  d.OnResult("inf-1", "dogs", 2, "");
  d.OnResult("inf-2", "dogs", 1, "");  // Another version: not this deploy's answer.
  auto results = d.Collect({"inf-1", "inf-2", "inf-3"}, "dogs", 2, absl::Milliseconds(50));
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].node(), "inf-1");
  EXPECT_TRUE(results[0].ok());
  EXPECT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].error(), "no answer before the timeout");
  EXPECT_FALSE(results[2].ok());
  EXPECT_EQ(results[2].error(), "cannot load: out of memory");

  d.OnResult("inf-1", "dogs", 2, "a late duplicate");
  d.Expect({"inf-1"}, "dogs", 2);
  results = d.Collect({"inf-1"}, "dogs", 2, absl::Milliseconds(20));
  EXPECT_EQ(results[0].error(), "no answer before the timeout");
}

}  // namespace
}  // namespace kennel::coordinator
