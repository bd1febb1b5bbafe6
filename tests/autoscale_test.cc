// Autoscaled serving for real: a coordinator with the `local` provider starts and retires
// kennel-inference processes for a model; kennelctl sets the settings; a load over the
// model's nodes loses nothing while one is retired; the settings survive a coordinator
// restart; nodes that cannot start stop the growth with a reason.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <regex>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "core/files.h"
#include "core/member/coordinator_client.h"
#include "core/ml/artifact.h"
#include "core/subprocess.h"
#include "core/testing/paths.h"
#include "kennel/v1/admin.grpc.pb.h"
#include "kennel/v1/coordinator.grpc.pb.h"
#include "tests/testing/kennelctl_run.h"
#include "tests/testing/serving_helpers.h"

namespace kennel {
namespace {
namespace fs = std::filesystem;
using core::Process;
using core::testing::BuildDir;

using testing::CtlRun;

class AutoscaleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / absl::StrCat("autoscale-", ::getpid(), "-",
                                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    // Stopped as an operator would (SIGTERM): its local provider stops the nodes it started. (A
    // coordinator that is killed leaves them serving, for its next start to adopt.)
    if (coordinator_) {
      coordinator_->Signal(SIGTERM);
      EXPECT_TRUE(coordinator_->Wait(absl::Seconds(60)).ok());
      coordinator_.reset();
    }
    if (!HasFailure()) fs::remove_all(dir_);
  }

  void StartCoordinator(const std::string& node_args = "--instances 1 --metrics_port -1",
                        std::vector<std::string> provider = {"--autoscale_provider", "local"}) {
    std::vector<std::string> argv = {BuildDir() + "/coordinator/kennel-coordinator", "--listen", "127.0.0.1:0",
                                     "--data_dir", dir_ + "/coord", "--autoscale_node_args", node_args};
    argv.insert(argv.end(), provider.begin(), provider.end());
    auto c = Process::Start(argv, dir_ + absl::StrCat("/coordinator-", starts_++, ".log"), {"OPENBLAS_NUM_THREADS=1"});
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = std::move(*c);
    auto line = coordinator_->WaitForLine("listening on port ", absl::Seconds(30));
    ASSERT_TRUE(line.ok()) << line.status();
    address_ = absl::StrCat("127.0.0.1:", line->substr(line->rfind(' ') + 1));
    auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    admin_ = v1::Admin::NewStub(channel);
    member_ = v1::Coordinator::NewStub(channel);
  }

  // The small CNN registered as model "fashion" (version 1).
  void RegisterModel() {
    testing::WriteSmallCnn(dir_ + "/fashion", 7);
    v1::ArtifactRef ref;
    ref.set_kind(v1::ArtifactRef::MODEL);
    ref.set_name("fashion");
    auto stored = core::UploadFolder(*member_, dir_ + "/fashion", {core::kManifestFile, core::kWeightsFile}, ref,
                                     absl::Minutes(1));
    ASSERT_TRUE(stored.ok()) << stored.status();
  }

  CtlRun Ctl(std::vector<std::string> args, absl::Duration timeout = absl::Minutes(2)) {
    args.insert(args.begin(), {"-c", address_});
    return testing::RunKennelctl(args, absl::StrCat(dir_, "/ctl-", ctl_runs_++), timeout);
  }

  v1::AutoscaleStatus Autoscale(const std::string& model) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetAutoscaleRequest request;
    request.set_name(model);
    v1::GetAutoscaleResponse response;
    grpc::Status s = admin_->GetAutoscale(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.models().empty() ? v1::AutoscaleStatus() : response.models(0);
  }

  v1::Endpoints Endpoints(const std::string& model) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::WatchEndpointsRequest request;
    request.set_model(model);
    auto reader = admin_->WatchEndpoints(&context, request);
    v1::Endpoints e;
    reader->Read(&e);
    EXPECT_TRUE(reader->Finish().ok());
    return e;
  }

  // Waits until `done(status)` holds (or the timeout: then the last status, for the message).
  v1::AutoscaleStatus WaitFor(const std::function<bool(const v1::AutoscaleStatus&)>& done,
                              absl::Duration timeout = absl::Seconds(90)) {
    const absl::Time deadline = absl::Now() + timeout;
    v1::AutoscaleStatus s;
    while (absl::Now() < deadline) {
      s = Autoscale("fashion");
      if (done(s)) return s;
      absl::SleepFor(absl::Milliseconds(200));
    }
    ADD_FAILURE() << "timed out; last status: " << s.DebugString() << "\ncoordinator log:\n" << coordinator_->Log();
    return s;
  }

  std::string dir_;
  std::unique_ptr<Process> coordinator_;
  std::string address_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<v1::Coordinator::Stub> member_;
  int starts_ = 0;
  int ctl_runs_ = 0;
};

TEST_F(AutoscaleTest, NodesAreStartedAndRetiredWithoutLossAndTheSettingsSurviveARestart) {
  StartCoordinator();
  RegisterModel();
  // No inference node exists: deploy with autoscaling starts the one min asks for.
  CtlRun run = Ctl({"deploy", "fashion", "--autoscale", "min=1,max=3,stable=3,panic=1"});
  ASSERT_EQ(run.code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("autoscaling fashion: min=1,max=3"), std::string::npos) << run.out;
  auto s = WaitFor([](const auto& a) { return a.serving_nodes() == 1; });
  EXPECT_EQ(s.version(), 1);
  EXPECT_EQ(s.provider(), "local");
  EXPECT_NE(s.last_decision().find("fewer nodes (0) than min 1"), std::string::npos) << s.last_decision();

  // A client follows the model's nodes (kennelctl bench --model: WatchEndpoints) while min goes
  // to 2 and back to 1: its streams move to the new node when it serves, and off the node that
  // leaves before it is told to retire. No request fails, no stream breaks.
  const std::string bench_base = dir_ + "/bench";
  auto bench = Process::Start({BuildDir() + "/cli/kennelctl", "-c", address_, "bench", "--model", "fashion",
                               "--duration", "20", "--rate", "400", "--concurrency", "4", "-o", "json"},
                              bench_base + ".out", {}, bench_base + ".err");
  ASSERT_TRUE(bench.ok()) << bench.status();
  absl::SleepFor(absl::Seconds(1));
  run = Ctl({"autoscale", "fashion", "min=2,max=3,stable=3,panic=1"});
  ASSERT_EQ(run.code, 0) << run.err;
  s = WaitFor([](const auto& a) { return a.serving_nodes() == 2 && a.starting_nodes() == 0; });
  v1::Endpoints endpoints = Endpoints("fashion");
  ASSERT_EQ(endpoints.endpoints_size(), 2) << endpoints.DebugString();
  // Both nodes get requests (their load reports say so).
  int busy_nodes = 0;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(10); absl::Now() < deadline && busy_nodes < 2;) {
    grpc::ClientContext context;
    v1::ClusterStatus status;
    ASSERT_TRUE(admin_->GetClusterStatus(&context, {}, &status).ok());
    busy_nodes = 0;
    for (const auto& n : status.nodes()) busy_nodes += n.serving() && n.load().arrivals_per_s() > 0;
    absl::SleepFor(absl::Milliseconds(250));
  }
  EXPECT_EQ(busy_nodes, 2) << "the client did not follow the new node";

  // kennelctl status shows the model's autoscaling.
  run = Ctl({"status"});
  EXPECT_NE(run.out.find("AUTOSCALING"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("fashion:1"), std::string::npos) << run.out;

  run = Ctl({"autoscale", "fashion", "min=1,max=3,stable=3,panic=1"});
  ASSERT_EQ(run.code, 0) << run.err;
  s = WaitFor([](const auto& a) { return a.serving_nodes() == 1 && a.draining_nodes() == 0; });
  EXPECT_NE(s.last_decision().find("scale in 2 -> 1"), std::string::npos) << s.last_decision();
  EXPECT_EQ(s.scale_in_failed_requests(), 0);
  EXPECT_EQ(Endpoints("fashion").endpoints_size(), 1);
  auto code = (*bench)->Wait(absl::Minutes(1));
  ASSERT_TRUE(code.ok()) << code.status();
  const std::string bench_out = *core::ReadFile(bench_base + ".out");
  auto report = nlohmann::json::parse(bench_out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << bench_out << *core::ReadFile(bench_base + ".err");
  EXPECT_EQ(*code, 0) << bench_out;
  EXPECT_GT(report["ok"].get<int64_t>(), 2000) << bench_out;
  EXPECT_TRUE(report["errors"].empty()) << "requests failed: " << bench_out;
  EXPECT_EQ(report["stream_restarts"].get<int64_t>(), 0) << "a stream broke: " << bench_out;
  EXPECT_GE(report["stream_moves"].get<int64_t>(), 4) << bench_out;

  // The node went the whole way: told to retire after it left the set, NOT_SERVING, drained,
  // exited by itself (a node that just died would lose nothing here either: clients retry).
  std::smatch m;
  const std::string decision = s.last_decision();
  ASSERT_TRUE(std::regex_search(decision, m, std::regex(R"(\((fashion-auto-[0-9]+), the least loaded\))"))) << decision;
  const std::string retired = m[1];
  auto node_log = core::ReadFile(dir_ + "/coord/autoscaled/" + retired + "/node.log");
  ASSERT_TRUE(node_log.ok()) << node_log.status();
  EXPECT_NE(node_log->find("retiring (scale in 2 -> 1"), std::string::npos) << *node_log;
  EXPECT_NE(node_log->find("retired by the coordinator: drained, exiting"), std::string::npos) << *node_log;
  const std::string log = coordinator_->Log();
  EXPECT_LT(log.find("autoscaling fashion: scale in"), log.find("retiring inference node " + retired)) << log;
  EXPECT_LT(log.find("retiring inference node " + retired), log.find(retired + " has left")) << log;
  EXPECT_NE(log.find(retired + " has left"), std::string::npos) << log;

  // A coordinator restart keeps the settings; the local provider's nodes stopped with it, so
  // the restarted one starts what min needs again.
  coordinator_->Signal(SIGTERM);
  ASSERT_TRUE(coordinator_->Wait(absl::Seconds(60)).ok());
  StartCoordinator();
  s = WaitFor([](const auto& a) { return a.serving_nodes() == 1; });
  EXPECT_EQ(s.spec().min_nodes(), 1);
  EXPECT_EQ(s.spec().stable_window_s(), 3);

  // Off: the settings go, the node stays.
  run = Ctl({"autoscale", "fashion", "off"});
  ASSERT_EQ(run.code, 0) << run.err;
  run = Ctl({"autoscale", "fashion"});
  EXPECT_EQ(run.code, 2) << run.out << run.err;
  EXPECT_NE(run.err.find("not autoscaled"), std::string::npos) << run.err;
  EXPECT_EQ(Endpoints("fashion").endpoints_size(), 1);
}

TEST_F(AutoscaleTest, BadSettingsAreRefusedWithTheReason) {
  StartCoordinator();
  RegisterModel();
  struct Bad {
    std::string settings, message;
  };
  for (const Bad& bad : std::vector<Bad>{{"min=3,max=2", "min (3) is above max (2)"},
                                         {"min=1,max=2,target=0", "target must be in (0, 1]"},
                                         {"min=1,max=2,stable=-5", "stable_window must be a positive"},
                                         {"min=1,max=2,speed=9", "unknown setting 'speed'"},
                                         {"min=1", "min and max are needed"},
                                         {"min=one,max=2", "'min=one' is not key=number"}}) {
    CtlRun run = Ctl({"autoscale", "fashion", bad.settings});
    EXPECT_EQ(run.code, 2) << bad.settings << ": " << run.out << run.err;
    EXPECT_NE(run.err.find(bad.message), std::string::npos) << bad.settings << ": " << run.err;
  }
  // The coordinator checks too (another client), and for a model it does not know.
  grpc::ClientContext context;
  v1::SetAutoscaleRequest request;
  request.set_name("fashion");
  request.mutable_spec()->set_min_nodes(0);
  request.mutable_spec()->set_max_nodes(2);
  v1::AutoscaleStatus response;
  grpc::Status s = admin_->SetAutoscale(&context, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("min must be at least 1"), std::string::npos) << s.error_message();
  CtlRun run = Ctl({"autoscale", "no-such-model", "min=1,max=2"});
  EXPECT_NE(run.code, 0);
  EXPECT_NE(run.err.find("no-such-model"), std::string::npos) << run.err;
  EXPECT_TRUE(Autoscale("").model().empty()) << "a refused setting was kept";
}

TEST_F(AutoscaleTest, NodesThatCannotStartStopTheGrowthWithTheReason) {
  // Every node this coordinator starts exits at once (a flag kennel-inference does not have).
  StartCoordinator("--no_such_flag");
  RegisterModel();
  CtlRun run = Ctl({"autoscale", "fashion", "min=1,max=2,max-start-failures=2"});
  ASSERT_EQ(run.code, 0) << run.err;
  auto s = WaitFor([](const auto& a) { return a.problem().find("not growing") != std::string::npos; });
  EXPECT_EQ(s.start_failures(), 2) << s.DebugString();
  EXPECT_NE(s.problem().find("ended before it served"), std::string::npos) << s.problem();
  EXPECT_NE(s.problem().find("no_such_flag"), std::string::npos) << s.problem();
  // No more are started: the failure count stays.
  absl::SleepFor(absl::Seconds(2));
  EXPECT_EQ(Autoscale("fashion").start_failures(), 2);
  run = Ctl({"autoscale"});
  EXPECT_NE(run.out.find("not growing"), std::string::npos) << run.out;
}

// The command provider, with a scale-out command that starts a node under a name of its own
// (as an EC2 Auto Scaling group or `kubectl scale` would): each answers a launch, and the
// scale-in command is run with the name of the node that left.
TEST_F(AutoscaleTest, TheCommandProviderRunsItsCommandsAndAdoptsTheNodesTheyStart) {
  const std::string out = absl::StrCat(
      "exec >/dev/null 2>&1; setsid ", BuildDir(), "/inference_node/kennel-inference --coordinator $KENNEL_COORDINATOR",
      " --name ext-$$ --listen 127.0.0.1:0 --metrics_port -1 --instances 1 --model $KENNEL_MODEL --cache_dir ", dir_,
      "/ext-$$ > ", dir_, "/ext-$$.log 2>&1 &");
  const std::string in = absl::StrCat("echo \"$KENNEL_ACTION $KENNEL_NODE\" >> ", dir_, "/scaled-in");
  StartCoordinator("", {"--autoscale_provider", "command", "--autoscale_scale_out", out, "--autoscale_scale_in", in});
  RegisterModel();
  CtlRun run = Ctl({"autoscale", "fashion", "min=2,max=2,stable=2,panic=1"});
  ASSERT_EQ(run.code, 0) << run.err;
  auto s = WaitFor([](const auto& a) { return a.serving_nodes() == 2 && a.starting_nodes() == 0; });
  EXPECT_EQ(s.provider(), "command");
  EXPECT_EQ(s.start_failures(), 0) << s.DebugString();
  EXPECT_NE(coordinator_->Log().find("answers the launch of fashion-auto-"), std::string::npos);
  const v1::Endpoints endpoints = Endpoints("fashion");
  ASSERT_EQ(endpoints.endpoints_size(), 2) << endpoints.DebugString();
  for (const auto& e : endpoints.endpoints()) EXPECT_EQ(e.node().rfind("ext-", 0), 0u) << e.node();

  run = Ctl({"autoscale", "fashion", "min=1,max=2,stable=2,panic=1"});
  ASSERT_EQ(run.code, 0) << run.err;
  s = WaitFor([](const auto& a) { return a.serving_nodes() == 1 && a.draining_nodes() == 0; });
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::StatusOr<std::string> scaled_in;
  do {
    absl::SleepFor(absl::Milliseconds(200));
    scaled_in = core::ReadFile(dir_ + "/scaled-in");
  } while ((!scaled_in.ok() || scaled_in->empty()) && absl::Now() < deadline);
  ASSERT_TRUE(scaled_in.ok()) << scaled_in.status() << coordinator_->Log();
  EXPECT_EQ(scaled_in->rfind("scale-in ext-", 0), 0u) << *scaled_in;
  // The node left is still (only) the other one; the test stops it.
  (void)::system(absl::StrCat("pkill -TERM -f '", dir_, "/ext-'").c_str());
}

}  // namespace
}  // namespace kennel
