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
#include "core/subprocess.h"

namespace kennel {
namespace {

using core::Process;

std::string BuildDir() {
  const char* dir = std::getenv("KENNEL_BUILD_DIR");
  return dir != nullptr ? dir : ".";
}

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

bool Eventually(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(250));
  }
  return done();
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
      net.In("c", {BuildDir() + "/coordinator/kennel-coordinator", "--listen", coordinator_address, "--data_dir",
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

}  // namespace
}  // namespace kennel
