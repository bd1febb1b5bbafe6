// kennelctl as users run it: a real coordinator and inference node on loopback, kennelctl as a
// process, and what it prints and exits with.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/dataset_index.h"
#include "core/files.h"
#include "core/ml/artifact.h"
#include "core/ml/models.h"
#include "core/subprocess.h"
#include "kennel/v1/coordinator.grpc.pb.h"
#include "core/testing/eventually.h"
#include "core/testing/paths.h"
#include "tests/testing/kennelctl_run.h"
#include "tests/testing/serving_helpers.h"

namespace kennel {
namespace {
namespace fs = std::filesystem;
using core::Process;

using core::testing::BuildDir;

using testing::CtlRun;

class KennelctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::path(::testing::TempDir()) / absl::StrCat("kennelctl-", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto c = Process::Start({BuildDir() + "/coordinator/kennel-coordinator", "--listen", "127.0.0.1:0",
                             "--data_dir", dir_ + "/coord"},
                            dir_ + "/coordinator.log");
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = c->release();
    auto line = coordinator_->WaitForLine("listening on port ", absl::Seconds(30));
    ASSERT_TRUE(line.ok()) << line.status();
    coordinator_address_ = absl::StrCat("127.0.0.1:", line->substr(line->rfind(' ') + 1));
    testing::WriteSmallCnn(dir_ + "/fashion", 7);
    inference_ = StartInference("inf-1", /*with_model=*/true).release();
    inference_address_ = Address(*inference_);
    // Any valid PNG will do as an image to classify; notes.txt and garbage.png are not images.
    const std::string png = SmallPng();
    fs::create_directories(dir_ + "/images");
    ASSERT_TRUE(core::WriteFileAtomic(dir_ + "/images/a.png", png).ok());
    ASSERT_TRUE(core::WriteFileAtomic(dir_ + "/images/notes.txt", "not an image").ok());
    ASSERT_TRUE(core::WriteFileAtomic(dir_ + "/garbage.png", "this is no PNG").ok());
  }

  static void TearDownTestSuite() {
    delete inference_;
    delete coordinator_;
    // A failed run's folder stays for its logs.
    if (::testing::UnitTest::GetInstance()->current_test_suite()->Passed()) fs::remove_all(dir_);
  }

  static std::unique_ptr<Process> StartInference(const std::string& name, bool with_model,
                                                 const std::string& model = "fashion") {
    std::vector<std::string> argv = {BuildDir() + "/inference_node/kennel-inference", "--listen", "127.0.0.1:0",
                                     "--metrics_port", "-1", "--name", name, "--instances", "1",
                                     "--coordinator", coordinator_address_, "--cache_dir", dir_ + "/" + name};
    if (with_model) argv.insert(argv.end(), {"--model_dir", dir_ + "/" + model});
    auto p = Process::Start(argv, dir_ + "/" + name + ".log", {"OPENBLAS_NUM_THREADS=1"});
    EXPECT_TRUE(p.ok()) << p.status();
    return std::move(*p);
  }

  static std::string Address(Process& p) {
    auto line = p.WaitForLine("listening on port ", absl::Seconds(60));
    EXPECT_TRUE(line.ok()) << line.status() << p.Log();
    if (!line.ok()) return "";
    const std::string rest = line->substr(line->find("port ") + 5);
    return absl::StrCat("127.0.0.1:", rest.substr(0, rest.find(' ')));
  }

  // A valid PNG: the fixture generator's palette image.
  static std::string SmallPng() {
    auto png = core::ReadFile(core::testing::FixtureDir() + "/palette.png");
    EXPECT_TRUE(png.ok()) << png.status();
    return png.ok() ? *png : "";
  }

  // kennelctl ARGS...
  static CtlRun Ctl(const std::vector<std::string>& args, absl::Duration timeout = absl::Minutes(3)) {
    static int n = 0;
    return testing::RunKennelctl(args, absl::StrCat(dir_, "/ctl-", n++), timeout);
  }

  static inline std::string dir_;
  static inline Process* coordinator_ = nullptr;
  static inline Process* inference_ = nullptr;
  static inline std::string coordinator_address_, inference_address_;
};

const std::vector<std::string> kCommands = {"status", "jobs", "job", "cancel", "models", "train", "tune", "deploy",
                                            "classify", "bench", "autoscale", "import", "up", "dataset", "ui"};

TEST_F(KennelctlTest, GlobalFlagsWorkAfterTheCommandAndShowInEveryHelp) {
  CtlRun run = Ctl({"status", "-o", "json", "-c", coordinator_address_});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_TRUE(run.json().contains("nodes")) << run.out;
  run = Ctl({"-o", "json", "-c", coordinator_address_, "status"});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_TRUE(run.json().contains("nodes")) << run.out;
  for (const auto& command : kCommands) {
    run = Ctl({command, "--help"});
    EXPECT_EQ(run.code, 0) << command;
    EXPECT_NE(run.out.find("-o,--output"), std::string::npos) << command << ":\n" << run.out;
    EXPECT_NE(run.out.find("-c,--coordinator"), std::string::npos) << command << ":\n" << run.out;
  }
}

TEST_F(KennelctlTest, NoShortFlagMeansTwoThings) {
  // Every short flag of every command, with the long name it stands for.
  std::map<std::string, std::set<std::string>> meanings;
  const std::regex short_flag(R"(^\s+(-[a-zA-Z]),(--[a-z-]+))");
  for (const auto& command : kCommands) {
    CtlRun run = Ctl({command, "--help"});
    for (absl::string_view line : absl::StrSplit(run.out, '\n')) {
      std::cmatch m;
      const std::string l(line);
      if (std::regex_search(l.c_str(), m, short_flag)) meanings[m[1]].insert(m[2]);
    }
  }
  ASSERT_TRUE(meanings.contains("-c"));
  for (const auto& [flag, longs] : meanings) {
    EXPECT_EQ(longs.size(), 1u) << flag << " means " << *longs.begin() << " and " << *longs.rbegin();
  }
}

TEST_F(KennelctlTest, UnknownCommandIsNamed) {
  CtlRun run = Ctl({"nosuchcmd"});
  EXPECT_EQ(run.code, 2);
  EXPECT_NE(run.err.find("unknown command 'nosuchcmd'"), std::string::npos) << run.err;
}

TEST_F(KennelctlTest, AnAddressOfTheWrongKindOfServerSaysSo) {
  CtlRun run = Ctl({"-c", inference_address_, "status"});
  EXPECT_EQ(run.code, 2);
  EXPECT_NE(run.err.find(inference_address_ + " is not a Kennel coordinator"), std::string::npos) << run.err;
  run = Ctl({"classify", "-s", coordinator_address_, dir_ + "/images/a.png"});
  EXPECT_EQ(run.code, 2);
  EXPECT_NE(run.err.find(coordinator_address_ + " is not a Kennel inference node"), std::string::npos) << run.err;
}

TEST_F(KennelctlTest, AnUnreachableCoordinatorIsSaidAlikeByEveryCommand) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"status"}, {"jobs"}, {"job", "job-1"}, {"models"}, {"deploy", "fashion"}, {"cancel", "job-1"},
           {"train", "--detach"}}) {
    std::vector<std::string> argv = {"-c", "127.0.0.1:1"};
    argv.insert(argv.end(), args.begin(), args.end());
    CtlRun run = Ctl(argv);
    EXPECT_EQ(run.code, 3) << args[0] << ": " << run.err;
    EXPECT_NE(run.err.find("cannot reach the coordinator at 127.0.0.1:1"), std::string::npos) << args[0] << ": " << run.err;
  }
}

// `kennelctl ui` on port 0 against `coordinator`: the process and its port.
std::pair<std::unique_ptr<Process>, int> StartConsole(const std::string& coordinator, const std::string& log,
                                                      const std::vector<std::string>& extra = {},
                                                      const std::vector<std::string>& env = {}) {
  std::vector<std::string> argv = {BuildDir() + "/cli/kennelctl", "-c", coordinator, "ui", "--port", "0"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto ui = Process::Start(argv, log, env);
  EXPECT_TRUE(ui.ok()) << ui.status();
  if (!ui.ok()) return {nullptr, 0};
  auto line = (*ui)->WaitForLine("Kennel console at http://127.0.0.1:", absl::Seconds(30));
  EXPECT_TRUE(line.ok()) << line.status() << (*ui)->Log();
  if (!line.ok()) return {nullptr, 0};
  const std::string rest = line->substr(line->find("127.0.0.1:") + 10);
  return {std::move(*ui), std::stoi(rest.substr(0, rest.find('/')))};
}

// The console (the browser test checks the page; this, the server, in every build): its own
// files and Chart.js from the binary, the API over the user's gRPC calls (serving statistics
// from the node itself), errors as words with a status, and the rules: a foreign Host 403,
// writes 405, the CSP on every answer, a port in use named.
TEST_F(KennelctlTest, TheConsoleServesItsPageAndTheClusterAndOnlyReads) {
  auto [ui, port] = StartConsole(coordinator_address_, dir_ + "/ui.log");
  ASSERT_NE(ui, nullptr);
  httplib::Client http("127.0.0.1", port);
  auto page = http.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("/console.js"), std::string::npos);
  EXPECT_NE(page->get_header_value("Content-Security-Policy").find("script-src 'self'"), std::string::npos);
  EXPECT_FALSE(page->has_header("Access-Control-Allow-Origin"));
  auto chart = http.Get("/chart.min.js");
  ASSERT_TRUE(chart);
  EXPECT_EQ(chart->status, 200);
  EXPECT_NE(chart->body.find("Chart.js v3"), std::string::npos);
  EXPECT_EQ(http.Get("/no-such-file")->status, 404);

  auto cluster = http.Get("/api/cluster");
  ASSERT_TRUE(cluster);
  ASSERT_EQ(cluster->status, 200) << cluster->body;
  EXPECT_EQ(nlohmann::json::parse(cluster->body)["caller"], "anonymous (no TLS)");
  // The node's counters come from the node: a request answered shows under OK.
  ASSERT_EQ(Ctl({"classify", "-s", inference_address_, dir_ + "/images/a.png"}).code, 0);
  nlohmann::json serving;
  ASSERT_TRUE(core::testing::Eventually([&] {
    auto r = http.Get("/api/serving");
    if (!r || r->status != 200) return false;
    serving = nlohmann::json::parse(r->body);
    for (const auto& node : serving["nodes"]) {
      if (node["name"] == "inf-1" && node.contains("stats") && node["stats"]["requests_by_code"]["OK"].get<std::string>() != "0") {
        return true;
      }
    }
    return false;
  }, absl::Seconds(30))) << serving.dump(2);
  auto missing = http.Get("/api/jobs/job-404");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404) << missing->body;
  EXPECT_EQ(nlohmann::json::parse(missing->body)["error"]["code"], "NOT_FOUND") << missing->body;
  for (const char* path : {"/api/nothing", "/api/jobs/a%20b"}) {
    auto none = http.Get(path);
    ASSERT_TRUE(none);
    EXPECT_EQ(none->status, 404) << path;
    EXPECT_EQ(nlohmann::json::parse(none->body)["error"]["code"], "NOT_FOUND") << none->body;
  }

  httplib::Headers foreign = {{"Host", "attacker.example"}};
  auto rebound = http.Get("/api/cluster", foreign);
  ASSERT_TRUE(rebound);
  EXPECT_EQ(rebound->status, 403);
  auto posted = http.Post("/api/cluster", "{}", "application/json");
  ASSERT_TRUE(posted);
  EXPECT_EQ(posted->status, 405);
  EXPECT_EQ(posted->get_header_value("Allow"), "GET, HEAD");
  EXPECT_EQ(http.Delete("/api/jobs/job-1")->status, 405);

  CtlRun second = Ctl({"-c", coordinator_address_, "ui", "--port", std::to_string(port)});
  EXPECT_EQ(second.code, 2) << second.err;
  EXPECT_NE(second.err.find(absl::StrCat("port ", port, " is in use")), std::string::npos) << second.err;
}

// A coordinator that cannot be reached is an answer the page can show: 503 and the CLI's words.
TEST_F(KennelctlTest, TheConsoleSaysWhenTheCoordinatorIsUnreachable) {
  auto [ui, port] = StartConsole("127.0.0.1:1", dir_ + "/ui-unreachable.log");
  ASSERT_NE(ui, nullptr);
  EXPECT_TRUE(ui->WaitForLine("cannot reach the coordinator at 127.0.0.1:1", absl::Seconds(30)).ok()) << ui->Log();
  auto r = httplib::Client("127.0.0.1", port).Get("/api/jobs");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  const nlohmann::json error = nlohmann::json::parse(r->body)["error"];
  EXPECT_EQ(error["code"], "UNAVAILABLE");
  EXPECT_EQ(error["peer"], "coordinator");
  EXPECT_NE(error["message"].get<std::string>().find("cannot reach the coordinator at 127.0.0.1:1"), std::string::npos);
}

// --open hands the URL to $BROWSER (found on $PATH like a shell would).
TEST_F(KennelctlTest, TheConsoleOpensItsPageInTheUsersBrowser) {
  const std::string bin = dir_ + "/browser-bin", opened = dir_ + "/opened.txt";
  fs::create_directories(bin);
  ASSERT_TRUE(core::WriteFileAtomic(bin + "/fake-browser", absl::StrCat("#!/bin/sh\necho \"$1\" > ", opened, "\n")).ok());
  fs::permissions(bin + "/fake-browser", fs::perms::owner_all);
  const char* path = std::getenv("PATH");
  auto [ui, port] = StartConsole(coordinator_address_, dir_ + "/ui-open.log", {"--open"},
                                 {"BROWSER=fake-browser", absl::StrCat("PATH=", bin, ":", path != nullptr ? path : "/usr/bin:/bin")});
  ASSERT_NE(ui, nullptr);
  ASSERT_TRUE(core::testing::Eventually([&] { return fs::exists(opened) && fs::file_size(opened) > 0; },
                                        absl::Seconds(30))) << ui->Log();
  EXPECT_EQ(*core::ReadFile(opened), absl::StrCat("http://127.0.0.1:", port, "/\n"));
}

TEST_F(KennelctlTest, ClassifyJsonKeepsZeroValues) {
  CtlRun run = Ctl({"classify", "-s", inference_address_, "-o", "json", "--top-k", "10", dir_ + "/images/a.png"});
  ASSERT_EQ(run.code, 0) << run.err;
  const auto out = run.json();
  ASSERT_EQ(out.size(), 1u) << run.out;
  std::set<int> indices;
  for (const auto& p : out[0]["predictions"]) {
    ASSERT_TRUE(p.contains("class_index")) << p.dump();
    indices.insert(p["class_index"].get<int>());
  }
  EXPECT_TRUE(indices.contains(0)) << run.out;
}

TEST_F(KennelctlTest, ClassifyExitCodesAndSkippedFiles) {
  CtlRun run = Ctl({"classify", "-s", inference_address_, dir_ + "/images"});
  EXPECT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.err.find("skipped 1 file(s)"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("notes.txt"), std::string::npos) << run.err;

  run = Ctl({"classify", "-s", inference_address_, dir_ + "/missing.png"});
  EXPECT_EQ(run.code, 2) << run.err;
  EXPECT_NE(run.err.find("no such file"), std::string::npos) << run.err;

  run = Ctl({"classify", "-s", inference_address_, dir_ + "/garbage.png"});
  EXPECT_EQ(run.code, 2) << run.err;  // Bad input, like a missing file.
  EXPECT_NE(run.out.find("INVALID_ARGUMENT"), std::string::npos) << run.out;

  run = Ctl({"classify", "-s", "127.0.0.1:1", dir_ + "/images/a.png"});
  EXPECT_EQ(run.code, 3) << run.err;
  EXPECT_NE(run.err.find("cannot reach the inference node at 127.0.0.1:1"), std::string::npos) << run.err;
  EXPECT_EQ(run.err.find("files in"), std::string::npos) << run.err;
}

TEST_F(KennelctlTest, BenchRunsItsWholeDurationAndFailsLoudlyWhenTheNodeDies) {
  CtlRun run = Ctl({"bench", "--rate", "-5"});
  EXPECT_EQ(run.code, 2) << run.err;

  auto node = StartInference("inf-bench", /*with_model=*/true);
  const std::string address = Address(*node);
  const std::string base = dir_ + "/bench";
  auto bench = Process::Start({BuildDir() + "/cli/kennelctl", "bench", "-o", "json", "-s", address, "--duration", "6",
                               "--concurrency", "2", "--fashion-mnist", "50"},
                              base + ".out", {}, base + ".err");
  ASSERT_TRUE(bench.ok());
  // Let some requests through, then take the node away for good.
  auto served = node->WaitForLine("warm", absl::Seconds(30));
  absl::SleepFor(absl::Seconds(1));
  node->Signal(SIGKILL);
  auto code = (*bench)->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok());
  const std::string out = *core::ReadFile(base + ".out");
  const std::string err = *core::ReadFile(base + ".err");
  EXPECT_NE(*code, 0) << out << err;
  const auto report = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << out << err;
  EXPECT_GT(report["failed"].get<int64_t>(), 0) << out;
  EXPECT_GT(report["stream_restarts"].get<int64_t>(), 0) << out;
  // It kept trying for the whole run instead of stopping when its streams died, and says so.
  EXPECT_GE(report["seconds"].get<double>(), 6.0) << out;
  EXPECT_NE(err.find("requests failed"), std::string::npos) << err;
}

// With Fashion-MNIST's images, bench also scores the answers: against a model that answers
// the first test image's class to everything, one image cycled is always right, and against
// one that answers another class, never.
TEST_F(KennelctlTest, BenchScoresItsAnswersAgainstFashionMnistsLabels) {
  const int label = core::IndexFashionMnist(core::kDebianFashionMnistRoot, "test")->samples(0).label();
  for (const bool right : {true, false}) {
    const std::string model = absl::StrCat("answers-", right);
    testing::WriteSmallCnn(dir_ + "/" + model, 7, right ? label : (label + 1) % 10);
    auto node = StartInference(absl::StrCat("inf-score-", right), /*with_model=*/true, model);
    CtlRun run = Ctl({"bench", "-o", "json", "-s", Address(*node), "--duration", "1", "--concurrency", "1",
                      "--fashion-mnist", "1"});
    ASSERT_EQ(run.code, 0) << run.err;
    const nlohmann::json report = run.json();
    EXPECT_GT(report["ok"].get<int64_t>(), 0) << run.out;
    EXPECT_EQ(report["accuracy"], right ? 1.0 : 0.0) << run.out;
  }
}

// Two inference nodes behind one `-s a,b`: one is killed (-9) or stopped (SIGTERM) under load
// and no request is lost: unary calls are retried on the other node, streams reopen there and
// send again what the dead one left unanswered; a stopping node answers what it read first.
TEST_F(KennelctlTest, NoRequestIsLostWhenOneOfTwoNodesGoesAway) {
  for (const bool unary : {true, false}) {
    for (const int signal : {SIGKILL, SIGTERM}) {
      auto a = StartInference(absl::StrCat("inf-a-", unary, signal), /*with_model=*/true);
      auto b = StartInference(absl::StrCat("inf-b-", unary, signal), /*with_model=*/true);
      const std::string servers = absl::StrCat(Address(*a), ",", Address(*b));
      const std::string base = absl::StrCat(dir_, "/failover-", unary, "-", signal);
      std::vector<std::string> argv = {BuildDir() + "/cli/kennelctl", "bench", "-o", "json", "-s", servers,
                                       "--duration", "6", "--concurrency", "4", "--fashion-mnist", "100"};
      if (unary) argv.insert(argv.end(), {"--unary", "--rate", "300"});
      auto bench = Process::Start(argv, base + ".out", {}, base + ".err");
      ASSERT_TRUE(bench.ok());
      absl::SleepFor(absl::Seconds(2));
      a->Signal(signal);
      auto code = (*bench)->Wait(absl::Seconds(60));
      ASSERT_TRUE(code.ok());
      const std::string out = *core::ReadFile(base + ".out");
      const auto report = nlohmann::json::parse(out, nullptr, false);
      ASSERT_FALSE(report.is_discarded()) << out << *core::ReadFile(base + ".err");
      EXPECT_EQ(report["failed"].get<int64_t>(), 0) << (unary ? "unary" : "streams") << " signal " << signal << ": " << out;
      EXPECT_GT(report["ok"].get<int64_t>(), 0);
      EXPECT_EQ(*code, 0) << out;
      if (signal == SIGTERM) {
        auto stopped = a->Wait(absl::Seconds(20));
        ASSERT_TRUE(stopped.ok());
        EXPECT_EQ(*stopped, 0) << a->Log();
      }
    }
  }
}

TEST_F(KennelctlTest, ZeroMeansZeroAndBadJobFlagsAreRefused) {
  CtlRun run = Ctl({"-c", coordinator_address_, "-o", "json", "train", "--name", "zeros", "--momentum", "0",
                 "--weight-decay", "0", "--detach"});
  ASSERT_EQ(run.code, 0) << run.err;
  auto job = run.json();
  EXPECT_EQ(job["spec"]["training"]["momentum"].get<double>(), 0.0) << run.out;
  EXPECT_EQ(job["state"], "PENDING") << run.out;
  // The whole job, zero values included, from `job` too.
  run = Ctl({"-c", coordinator_address_, "-o", "json", "job", job["id"]});
  ASSERT_EQ(run.code, 0) << run.err;
  auto shown = run.json();
  for (const char* key : {"id", "spec", "state", "generation", "message", "nodes", "epochs", "model_version"}) {
    EXPECT_TRUE(shown.contains(key)) << key << " in " << run.out;
  }
  EXPECT_EQ(Ctl({"-c", coordinator_address_, "cancel", job["id"]}).code, 0);

  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"train", "--batch-size", "0"}, {"train", "--epochs", "0"}, {"train", "--lr", "0"},
           {"train", "--momentum", "nan"}, {"train", "--weight-decay", "inf"}, {"up", "--optimizer", "adam"},
           {"up", "--momentum", "1.5"}, {"bench", "--duration", "0"}}) {
    std::vector<std::string> argv = {"-c", coordinator_address_};
    argv.insert(argv.end(), bad.begin(), bad.end());
    run = Ctl(argv);
    EXPECT_EQ(run.code, 2) << bad[0] << " " << bad[1] << " " << bad[2] << ": " << run.err;
    EXPECT_NE(run.err.find(bad[1]), std::string::npos) << run.err;
  }
  // A compiled package where a module to train belongs: said before anything is sent.
  const std::string package = core::testing::Torch2Fixture("aoti_cnn.pt2");
  if (!package.empty()) {
    run = Ctl({"-c", coordinator_address_, "train", "--model-file", package});
    EXPECT_NE(run.code, 0) << run.out;
    EXPECT_NE(run.err.find("is an AOTInductor package, which is served, not trained"), std::string::npos) << run.err;
  }
}

// kennelctl tune refuses a bad search before sending anything, saying what is wrong; a good one
// is recorded (its first trial waits for trainers, as any job), listed, shown as JSON and as a
// table, and cancelled.
TEST_F(KennelctlTest, TuneRefusesBadSearchesAndShowsAndCancelsAGoodOne) {
  const std::vector<std::string> lr = {"--space", "learning_rate=log:1e-3:1e-1"};
  struct Bad {
    std::vector<std::string> args;
    std::string says;
  };
  for (const Bad& bad : std::vector<Bad>{
           {{"--space", "learning_rate=log:0:0.1"}, "log-uniform range must be above 0"},
           {{"--space", "momentum=uniform:0.9:0.5"}, "is empty"},
           {{"--space", "learnin_rate=log:1e-3:1e-1"}, "not a training field"},
           {{"--space", "learning_rate=log:1e-3"}, "MIN:MAX"},
           {{"--space", "batch_size=choice:32,,64"}, "empty choice"},
           {{"--space", "batch_size=choice:32,0"}, "batch"},
           {{"--space", "epochs=int:1:9"}, "epochs a trial trains"},
           {{"--space", "learning_rate=log:1e-3:1e-1", "--min-epochs", "3", "--max-trial-epochs", "2"}, "first rung"},
           {{"--space", "learning_rate=log:1e-3:1e-1", "--max-time", "soon"}, "--max-time"},
           {{}, "search space is empty"}}) {
    std::vector<std::string> argv = {"-c", coordinator_address_, "tune"};
    argv.insert(argv.end(), bad.args.begin(), bad.args.end());
    CtlRun run = Ctl(argv);
    EXPECT_EQ(run.code, 2) << bad.says << ": " << run.err;
    EXPECT_NE(run.err.find(bad.says), std::string::npos) << run.err;
  }
  EXPECT_EQ(Ctl({"-c", coordinator_address_, "-o", "json", "tune", "status"}).json()["tunings"].size(), 0u);

  std::vector<std::string> argv = {"-c", coordinator_address_, "-o", "json", "tune", "--name", "cli-search",
                                   "--max-trials", "3", "--max-time", "2h", "--detach"};
  argv.insert(argv.end(), lr.begin(), lr.end());
  CtlRun run = Ctl(argv);
  ASSERT_EQ(run.code, 0) << run.err;
  const auto t = run.json();
  const std::string id = t["id"];
  EXPECT_EQ(t["state"], "RUNNING");
  EXPECT_EQ(t["spec"]["max_seconds"], "7200");
  EXPECT_EQ(t["spec"]["strategy"], "ASHA");
  ASSERT_EQ(t["trials"].size(), 1u);
  EXPECT_EQ(t["trials"][0]["job_state"], "PENDING");  // No trainers here.
  EXPECT_TRUE(t["trials"][0]["params"].contains("learning_rate"));
  run = Ctl({"-c", coordinator_address_, "tune", "status"});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.out.find(id), std::string::npos) << run.out;
  run = Ctl({"-c", coordinator_address_, "tune", "status", id});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.out.find("LEARNING_RATE"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("waiting for trainers"), std::string::npos) << run.out;
  run = Ctl({"-c", coordinator_address_, "tune", "status", id, "-o", "json"});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_EQ(run.json()["id"], id);
  EXPECT_EQ(Ctl({"-c", coordinator_address_, "tune", "status", "tune-999"}).code, 2);
  run = Ctl({"-c", coordinator_address_, "tune", "cancel", id});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.out.find("cancelled"), std::string::npos) << run.out;
  run = Ctl({"-c", coordinator_address_, "-o", "json", "tune", "status", id});
  EXPECT_EQ(run.json()["state"], "CANCELLED") << run.out;
  EXPECT_EQ(run.json()["trials"][0]["state"], "TRIAL_CANCELLED") << run.out;
  // The trial's job was cancelled with it.
  run = Ctl({"-c", coordinator_address_, "-o", "json", "job", run.json()["trials"][0]["job_id"]});
  EXPECT_EQ(run.json()["state"], "CANCELLED") << run.out;
  EXPECT_EQ(Ctl({"-c", coordinator_address_, "tune", "cancel", id}).code, 2);  // Already ended.
}

// Uploads reach the coordinator's artifact store from the network: a file name that would
// leave the staging folder and a transfer over the size limit are refused, and nothing is
// written anywhere (the staging folder is left empty, no model is registered).
TEST_F(KennelctlTest, UploadsThatLeaveTheStoreOrExceedTheLimitAreRefusedWithNothingWritten) {
  auto stub = v1::Coordinator::NewStub(grpc::CreateChannel(coordinator_address_, grpc::InsecureChannelCredentials()));
  auto upload = [&](const std::string& name, int64_t size, const std::string& data) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::UploadArtifactResponse response;
    auto writer = stub->UploadArtifact(&context, &response);
    v1::ArtifactChunk header;
    header.mutable_header()->mutable_ref()->set_kind(v1::ArtifactRef::MODEL);
    header.mutable_header()->mutable_ref()->set_name("intruder");
    auto* file = header.mutable_header()->add_files();
    file->set_name(name);
    file->set_size(size);
    file->set_sha256(core::Sha256Hex(data));
    writer->Write(header);
    v1::ArtifactChunk body;
    body.set_data(data);
    writer->Write(body);
    writer->WritesDone();
    return writer->Finish();
  };
  const fs::path store = fs::path(dir_) / "coord" / "artifacts";
  for (const std::string name : {"../../escape", "../models/escape", "/tmp/escape", ".."}) {
    const grpc::Status status = upload(name, 6, "hello!");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name << ": " << status.error_message();
  }
  const grpc::Status big = upload("weights.safetensors", int64_t{1} << 40, "x");
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << big.error_message();
  EXPECT_NE(big.error_message().find("exceeds the limit"), std::string::npos) << big.error_message();

  EXPECT_TRUE(fs::is_empty(store / "staging"));
  std::error_code ec;  // (Other tests' files may come and go meanwhile.)
  for (auto it = fs::recursive_directory_iterator(dir_, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    EXPECT_NE(it->path().filename(), "escape") << it->path();
  }
  EXPECT_FALSE(fs::exists(store / "models" / "intruder"));
  EXPECT_FALSE(fs::exists("/tmp/escape"));
}

// A torchvision ResNet-34 with 7 classes, imported with kennelctl, registered, deployed through
// the coordinator and served: the labels come back from the imported class list.
TEST_F(KennelctlTest, ImportRegisterDeployAndClassify) {
  auto node = StartInference("inf-import", /*with_model=*/false);
  const std::string address = Address(*node);
  const std::string classes = "beagle,boxer,collie,dalmatian,husky,poodle,pug";
  CtlRun run = Ctl({"-c", coordinator_address_, "-o", "json", "import",
                 core::testing::FixtureDir() + "/resnet34_7cls.pth", "--name", "breeds7", "--arch", "resnet34",
                 "--classes", classes, "--register"});
  ASSERT_EQ(run.code, 0) << run.err;
  const auto imported = run.json();
  EXPECT_GE(imported["version"].get<int64_t>(), 1) << run.out;
  EXPECT_EQ(imported["lineage"]["imported"], true) << run.out;

  run = Ctl({"-c", coordinator_address_, "deploy", "breeds7", "--nodes", "inf-import"}, absl::Minutes(5));
  ASSERT_EQ(run.code, 0) << run.out << run.err;
  run = Ctl({"classify", "-s", address, "-o", "json", "--top-k", "7", dir_ + "/images/a.png"});
  ASSERT_EQ(run.code, 0) << run.err;
  std::set<std::string> labels;
  const auto classified = run.json();
  for (const auto& p : classified[0]["predictions"]) labels.insert(p["label"].get<std::string>());
  EXPECT_EQ(labels, (std::set<std::string>{"beagle", "boxer", "collie", "dalmatian", "husky", "poodle", "pug"}))
      << run.out;

  // A file that is not weights is named for what it is, and nothing is registered.
  run = Ctl({"-c", coordinator_address_, "import", core::testing::FixtureDir() + "/cmyk.jpg", "--name", "nope",
             "--arch", "resnet18", "--classes", "a,b", "--register"});
  EXPECT_EQ(run.code, 2);
  EXPECT_NE(run.err.find("is a JPEG image"), std::string::npos) << run.err;
  run = Ctl({"-c", coordinator_address_, "-o", "json", "models", "nope"});
  EXPECT_TRUE(run.json()["models"].empty()) << run.out;
}

}  // namespace
}  // namespace kennel
