// A cluster across "hosts": the coordinator and each trainer in a network namespace of its own
// (made by the test), joined by veth pairs on a bridge, so traffic between them crosses real
// links that the test can shape (tc tbf; this kernel has no netem) and cut (ip link set down).
// Needs root and iproute2; skipped, saying why, without them.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "core/files.h"
#include "core/subprocess.h"
#include "core/testing/eventually.h"
#include "core/testing/paths.h"

namespace kennel {
namespace {

using core::Process;

using core::testing::BuildDir;

// The namespaces, veths and bridge of one test; removed by the destructor whatever happened
// (processes inside are killed first by their owners).
class Network {
 public:
  explicit Network(std::string scratch) : scratch_(std::move(scratch)) {
    const int id = static_cast<int>(::getpid() % 100000);
    prefix_ = absl::StrCat("kn", id);
    subnet_ = absl::StrCat("10.213.", id % 250, ".");
  }
  ~Network() {
    for (const auto& host : hosts_) {
      Run({"ip", "link", "del", HostSide(host)});  // Both ends of the pair.
      Run({"ip", "netns", "del", Namespace(host)});
    }
    Run({"ip", "link", "del", Bridge()});
  }

  // An error says why the test cannot run here.
  absl::Status Create(const std::vector<std::string>& hosts) {
    if (::geteuid() != 0) return absl::FailedPreconditionError("needs root for ip netns");
    if (!Run({"ip", "link", "add", "name", Bridge(), "type", "bridge"})) {
      return absl::FailedPreconditionError("cannot create a bridge (iproute2 missing or no permission)");
    }
    if (!Run({"ip", "link", "set", Bridge(), "up"})) return absl::InternalError("bridge up");
    int n = 2;
    for (const auto& host : hosts) {
      hosts_.push_back(host);
      const std::string ns = Namespace(host), address = absl::StrCat(subnet_, n++);
      addresses_[host] = address;
      const bool ok = Run({"ip", "netns", "add", ns}) &&
                      Run({"ip", "link", "add", HostSide(host), "type", "veth", "peer", "name", NsSide(host)}) &&
                      Run({"ip", "link", "set", NsSide(host), "netns", ns}) &&
                      Run({"ip", "link", "set", HostSide(host), "master", Bridge(), "up"}) &&
                      Run({"ip", "netns", "exec", ns, "ip", "addr", "add", address + "/24", "dev", NsSide(host)}) &&
                      Run({"ip", "netns", "exec", ns, "ip", "link", "set", NsSide(host), "up"}) &&
                      Run({"ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"});
      if (!ok) return absl::FailedPreconditionError(absl::StrCat("cannot set up network namespace ", ns));
    }
    // The test's own commands (kennelctl) run in the root namespace, on the bridge.
    if (!Run({"ip", "addr", "add", absl::StrCat(subnet_, "1/24"), "dev", Bridge()})) {
      return absl::InternalError("bridge address");
    }
    return absl::OkStatus();
  }

  // Both directions of `host`'s link limited to `rate` (e.g. "200mbit").
  bool Shape(const std::string& host, const std::string& rate) {
    return Run({"tc", "qdisc", "add", "dev", HostSide(host), "root", "tbf", "rate", rate, "burst", "64kb",
                "latency", "50ms"}) &&
           Run({"ip", "netns", "exec", Namespace(host), "tc", "qdisc", "add", "dev", NsSide(host), "root", "tbf",
                "rate", rate, "burst", "64kb", "latency", "50ms"});
  }
  bool SetLink(const std::string& host, bool up) {
    return Run({"ip", "link", "set", HostSide(host), up ? "up" : "down"});
  }

  std::vector<std::string> In(const std::string& host, std::vector<std::string> argv) const {
    argv.insert(argv.begin(), {Which("ip"), "netns", "exec", Namespace(host)});
    return argv;
  }
  // Subprocesses start without a PATH search: where iproute2's tools are.
  static std::string Which(const std::string& tool) {
    for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
      if (std::filesystem::exists(dir + tool)) return dir + tool;
    }
    return tool;
  }
  const std::string& Address(const std::string& host) { return addresses_[host]; }

 private:
  std::string Namespace(const std::string& host) const { return absl::StrCat(prefix_, "-", host); }
  std::string HostSide(const std::string& host) const { return absl::StrCat(prefix_, host, "h"); }
  std::string NsSide(const std::string& host) const { return absl::StrCat(prefix_, host, "n"); }
  std::string Bridge() const { return prefix_ + "br"; }
  bool Run(std::vector<std::string> argv) const {
    argv[0] = Which(argv[0]);
    auto r = core::RunCommand(argv, absl::Seconds(20), scratch_);
    return r.ok() && r->first == 0;
  }

  std::string scratch_, prefix_, subnet_;
  std::vector<std::string> hosts_;
  std::map<std::string, std::string> addresses_;
};

// Polls every 250 ms.
bool Eventually(const std::function<bool()>& done, absl::Duration timeout) {
  return core::testing::Eventually(done, timeout, absl::Milliseconds(250));
}

// Coordinator, two trainers, each on its own host; trainer b's link rate-shaped to 200 Mbit/s.
// An elastic job (min 1) runs; b's link is cut mid-epoch: the coordinator declares b dead, a's
// collective with b fails at its timeout, and the job goes on with a alone from the checkpoint,
// every sample of every epoch trained on once. The link comes back and b registers again.
TEST(MultiHostTest, ACutLinkCostsATrainerAndTheJobGoesOnWithoutItsWork) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                                    absl::StrCat("multihost-", ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  Network net(dir.string());
  if (absl::Status s = net.Create({"c", "a", "b"}); !s.ok()) GTEST_SKIP() << s.message();
  ASSERT_TRUE(net.Shape("b", "200mbit"));
  const std::string coordinator_address = net.Address("c") + ":7070";
  auto coordinator = Process::Start(
      net.In("c", {BuildDir() + "/coordinator/kennel-coordinator", "--listen", coordinator_address, "--insecure", "--data_dir",
                   (dir / "coord").string(), "--heartbeat_timeout_s", "3"}),
      (dir / "coordinator.log").string());
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  ASSERT_TRUE((*coordinator)->WaitForLine("listening on port ", absl::Seconds(30)).ok()) << (*coordinator)->Log();
  std::map<std::string, std::unique_ptr<Process>> trainers;
  for (const std::string host : {"a", "b"}) {
    auto t = Process::Start(net.In(host, {BuildDir() + "/trainer_node/kennel-trainer", "--coordinator",
                                          coordinator_address, "--name", "trainer-" + host, "--advertise_host",
                                          net.Address(host), "--work_dir", (dir / host).string()}),
                            (dir / ("trainer-" + host + ".log")).string(), {"OPENBLAS_NUM_THREADS=1"});
    ASSERT_TRUE(t.ok()) << t.status();
    trainers[host] = std::move(*t);
  }
  auto ctl = [&](std::vector<std::string> args) -> std::pair<int, nlohmann::json> {
    std::vector<std::string> argv = {BuildDir() + "/cli/kennelctl", "-c", coordinator_address, "-o", "json"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = core::RunCommand(argv, absl::Minutes(2), dir.string());
    if (!r.ok()) return {-1, {}};
    return {r->first, nlohmann::json::parse(r->second, nullptr, false)};
  };
  auto node_state = [&](const std::string& name) -> std::string {
    auto [code, status] = ctl({"status"});
    if (code != 0) return "";
    for (const auto& n : status["nodes"]) {
      if (n["name"] == name) return n.value("state", "");
    }
    return "";
  };
  ASSERT_TRUE(Eventually([&] { return node_state("trainer-a") == "IDLE" && node_state("trainer-b") == "IDLE"; },
                         absl::Seconds(60)))
      << (*coordinator)->Log();
  auto [code, submitted] = ctl({"train", "--name", "hosts", "--epochs", "2", "--max-train-samples", "12000",
                                "--max-eval-samples", "1000", "--checkpoint-every", "20", "--min-world-size", "1",
                                "--collective-timeout", "10", "--detach"});
  ASSERT_EQ(code, 0);
  const std::string id = submitted["id"];
  auto step = [](const nlohmann::json& job) {
    return job.contains("last_step") ? std::stoll(job["last_step"].value("global_step", "0")) : 0;
  };
  ASSERT_TRUE(Eventually([&] { return step(ctl({"job", id}).second) > 25; }, absl::Seconds(180)))
      << (*coordinator)->Log();
  ASSERT_TRUE(net.SetLink("b", false));
  const absl::Time cut = absl::Now();
  nlohmann::json job;
  ASSERT_TRUE(Eventually([&] {
    job = ctl({"job", id}).second;
    return job["state"] == "RUNNING" && job["nodes"].size() == 1;
  }, absl::Seconds(90))) << job.dump(2) << (*coordinator)->Log();
  const absl::Duration recovered = absl::Now() - cut;
  EXPECT_EQ(job["nodes"][0], "trainer-a");
  std::cout << "link cut -> the job runs again on trainer-a alone after " << absl::FormatDuration(recovered)
            << " (heartbeat timeout 3 s, collective timeout 10 s)\n";
  ASSERT_TRUE(net.SetLink("b", true));
  const absl::Time restored = absl::Now();
  bool b_back = false;
  absl::Duration b_back_after;
  ASSERT_TRUE(Eventually([&] {
    if (!b_back && node_state("trainer-b") == "IDLE") {
      b_back = true;
      b_back_after = absl::Now() - restored;
    }
    job = ctl({"job", id}).second;
    return job["state"] == "SUCCEEDED" || job["state"] == "FAILED";
  }, absl::Seconds(300))) << (*coordinator)->Log();
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2) << (*coordinator)->Log();
  ASSERT_GE(job["memberships"].size(), 2u) << job.dump(2);
  EXPECT_EQ(job["memberships"][1]["world_size"], 1);
  ASSERT_EQ(job["epochs"].size(), 2u);
  for (const auto& e : job["epochs"]) EXPECT_EQ(e["train_samples"], "12000") << e.dump();
  // b comes back once its link does (TCP retransmits what the coordinator sent it; it sees
  // its stream closed and registers again).
  if (!b_back) {
    b_back = Eventually([&] { return node_state("trainer-b") == "IDLE"; }, absl::Seconds(120));
    b_back_after = absl::Now() - restored;
  }
  std::cout << "trainer-b after its link came back: "
            << (b_back ? absl::StrCat("registered again after ", absl::FormatDuration(b_back_after)) : "not back")
            << "; group history: " << job["memberships"].size() << " memberships\n";
  for (auto& [host, t] : trainers) t->Signal(SIGTERM);
  for (auto& [host, t] : trainers) EXPECT_TRUE(t->Wait(absl::Seconds(40)).ok()) << host;
  (*coordinator)->Signal(SIGTERM);
  EXPECT_TRUE((*coordinator)->Wait(absl::Seconds(60)).ok());
}

// Two inference nodes on hosts of their own; clients (kennelctl bench -s i1,i2) run unary calls
// and then streams while i2's link is cut. No FIN or RST reaches anyone: the clients' keepalive
// finds the connection dead, unary calls in flight are retried on i1 and streams reopen there,
// resending what i2 left unanswered. Nothing is lost.
TEST(MultiHostTest, ACutLinkToAnInferenceNodeLosesNoRequest) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                                    absl::StrCat("multihost-inf-", ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  Network net(dir.string());
  if (absl::Status s = net.Create({"c", "t", "i1", "i2"}); !s.ok()) GTEST_SKIP() << s.message();
  const std::string coordinator_address = net.Address("c") + ":7070";
  auto coordinator = Process::Start(
      net.In("c", {BuildDir() + "/coordinator/kennel-coordinator", "--listen", coordinator_address, "--insecure", "--data_dir",
                   (dir / "coord").string()}),
      (dir / "coordinator.log").string());
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  ASSERT_TRUE((*coordinator)->WaitForLine("listening on port ", absl::Seconds(30)).ok()) << (*coordinator)->Log();
  std::vector<std::unique_ptr<Process>> members;
  auto trainer = Process::Start(net.In("t", {BuildDir() + "/trainer_node/kennel-trainer", "--coordinator",
                                             coordinator_address, "--name", "trainer", "--advertise_host",
                                             net.Address("t"), "--work_dir", (dir / "t").string()}),
                                (dir / "trainer.log").string(), {"OPENBLAS_NUM_THREADS=1"});
  ASSERT_TRUE(trainer.ok());
  members.push_back(std::move(*trainer));
  for (const std::string host : {"i1", "i2"}) {
    auto node = Process::Start(
        net.In(host, {BuildDir() + "/inference_node/kennel-inference", "--coordinator", coordinator_address,
                      "--name", host, "--listen", net.Address(host) + ":7080", "--insecure", "--metrics_port", "-1",
                      "--cache_dir", (dir / (host + "-cache")).string()}),
        (dir / (host + ".log")).string(), {"OPENBLAS_NUM_THREADS=1"});
    ASSERT_TRUE(node.ok());
    members.push_back(std::move(*node));
  }
  auto ctl = [&](std::vector<std::string> args, absl::Duration timeout = absl::Minutes(3)) {
    std::vector<std::string> argv = {BuildDir() + "/cli/kennelctl", "-c", coordinator_address, "-o", "json"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = core::RunCommand(argv, timeout, dir.string());
    return r.ok() ? std::make_pair(r->first, nlohmann::json::parse(r->second, nullptr, false))
                  : std::make_pair(-1, nlohmann::json());
  };
  ASSERT_TRUE(Eventually([&] {
    auto [code, status] = ctl({"status"});
    return code == 0 && status["nodes"].size() == 3u;
  }, absl::Seconds(60))) << (*coordinator)->Log();
  auto [trained, job] = ctl({"train", "--name", "hosts", "--world-size", "1", "--epochs", "1", "--max-train-samples",
                             "2000", "--max-eval-samples", "500", "--wait"});
  ASSERT_EQ(trained, 0) << job.dump(2);
  auto [deployed, result] = ctl({"deploy", "hosts"});
  ASSERT_EQ(deployed, 0) << result.dump(2);
  const std::string servers = absl::StrCat(net.Address("i1"), ":7080,", net.Address("i2"), ":7080");
  for (const bool unary : {true, false}) {
    const std::string base = (dir / (unary ? "unary" : "streams")).string();
    std::vector<std::string> argv = {BuildDir() + "/cli/kennelctl", "bench", "-o", "json", "-s", servers,
                                     "--duration", "25", "--concurrency", "4", "--fashion-mnist", "100"};
    if (unary) argv.insert(argv.end(), {"--unary", "--rate", "100"});
    auto bench = Process::Start(argv, base + ".out", {}, base + ".err");
    ASSERT_TRUE(bench.ok());
    absl::SleepFor(absl::Seconds(5));
    ASSERT_TRUE(net.SetLink("i2", false));
    auto code = (*bench)->Wait(absl::Seconds(120));
    ASSERT_TRUE(code.ok());
    ASSERT_TRUE(net.SetLink("i2", true));
    const std::string out = core::ReadFile(base + ".out").value_or("");
    const auto report = nlohmann::json::parse(out, nullptr, false);
    ASSERT_FALSE(report.is_discarded()) << out << core::ReadFile(base + ".err").value_or("");
    std::cout << (unary ? "unary" : "streams") << " with i2's link cut 5 s into 25 s: " << report["ok"]
              << " answered, " << report["failed"] << " failed, p99 " << report["p99_ms"] << " ms, max "
              << report["max_ms"] << " ms\n";
    EXPECT_EQ(report["failed"].get<int64_t>(), 0) << out;
    EXPECT_GT(report["ok"].get<int64_t>(), 0) << out;
    EXPECT_EQ(*code, 0) << out;
    absl::SleepFor(absl::Seconds(3));  // i2 reachable again before the next round.
  }
  for (auto& m : members) m->Signal(SIGTERM);
  for (auto& m : members) EXPECT_TRUE(m->Wait(absl::Seconds(40)).ok());
  (*coordinator)->Signal(SIGTERM);
  EXPECT_TRUE((*coordinator)->Wait(absl::Seconds(60)).ok());
}

}  // namespace
}  // namespace kennel
