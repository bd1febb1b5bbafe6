#include "coordinator/node_providers.h"

#include "core/logging.h"
#include <signal.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/subprocess.h"

namespace kennel::coordinator {
namespace fs = std::filesystem;
namespace {

class LocalProvider : public NodeProvider {
 public:
  explicit LocalProvider(LocalProviderOptions options) : options_(std::move(options)) {}
  ~LocalProvider() override {
    absl::MutexLock lock(&mu_);
    // The nodes drain and exit on SIGTERM; Process' destructor would SIGKILL them, so they are
    // waited for a while first.
    for (auto& [name, p] : running_) p->Signal(SIGTERM);
    for (auto& s : stopping_) s.process->Signal(SIGTERM);
    for (auto& [name, p] : running_) (void)p->Wait(absl::Seconds(10));
    for (auto& s : stopping_) (void)s.process->Wait(absl::Seconds(10));
  }

  std::string name() const override { return "local"; }

  absl::Status Start(const std::string& node, const std::string& model) override {
    absl::MutexLock lock(&mu_);
    const std::string dir = (fs::path(options_.work_dir) / node).string();
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
    std::vector<std::string> argv;
    if (options_.first_core >= 0) {
      const long cores = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
      argv = {"/usr/bin/taskset", "-c", std::to_string((options_.first_core + started_) % cores)};
    }
    for (const std::string& a : {options_.inference_binary, std::string("--coordinator"), options_.coordinator,
                                 std::string("--name"), node, std::string("--listen"), std::string("127.0.0.1:0"),
                                 std::string("--model"), model, std::string("--cache_dir"), dir}) {
      argv.push_back(a);
    }
    argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
    auto p = core::Process::Start(argv, dir + "/node.log", {"OPENBLAS_NUM_THREADS=1"});
    if (!p.ok()) return p.status();
    ++started_;
    LOG(INFO) << "local provider: started " << node << " (pid " << (*p)->pid() << ", log " << dir << "/node.log)";
    running_[node] = std::move(*p);
    return absl::OkStatus();
  }

  absl::Status Stop(const std::string& node) override {
    absl::MutexLock lock(&mu_);
    auto it = running_.find(node);
    if (it == running_.end()) return absl::OkStatus();  // Not ours, or already ended.
    it->second->Signal(SIGTERM);  // A retired node has exited already; a stuck one drains.
    stopping_.push_back({std::move(it->second), absl::Now()});
    running_.erase(it);
    return absl::OkStatus();
  }

  std::vector<std::pair<std::string, std::string>> Ended() override {
    absl::MutexLock lock(&mu_);
    std::vector<std::pair<std::string, std::string>> out;
    for (auto it = running_.begin(); it != running_.end();) {
      auto code = it->second->Wait(absl::ZeroDuration());
      if (code.ok()) {
        std::string log = it->second->Log();
        if (log.size() > 400) log = log.substr(log.size() - 400);
        out.emplace_back(it->first, absl::StrCat("exit status ", *code, "; its log ends: ", log));
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
    // Stopped ones are reaped, and killed if they are still there after 30 s.
    std::erase_if(stopping_, [](Stopping& s) {
      if (s.process->Wait(absl::ZeroDuration()).ok()) return true;
      if (absl::Now() - s.since > absl::Seconds(30)) {
        s.process->Signal(SIGKILL);
        return s.process->Wait(absl::Seconds(1)).ok();
      }
      return false;
    });
    return out;
  }

 private:
  struct Stopping {
    std::unique_ptr<core::Process> process;
    absl::Time since;
  };
  const LocalProviderOptions options_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<core::Process>> running_ ABSL_GUARDED_BY(mu_);
  std::vector<Stopping> stopping_ ABSL_GUARDED_BY(mu_);
  int started_ ABSL_GUARDED_BY(mu_) = 0;
};

class CommandProvider : public NodeProvider {
 public:
  explicit CommandProvider(CommandProviderOptions options) : options_(std::move(options)) {
    worker_ = std::thread([this] { Work(); });
  }
  ~CommandProvider() override {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    worker_.join();
  }

  std::string name() const override { return "command"; }

  absl::Status Start(const std::string& node, const std::string& model) override {
    absl::MutexLock lock(&mu_);
    queue_.push_back({"scale-out", options_.scale_out, node, model});
    return absl::OkStatus();
  }
  absl::Status Stop(const std::string& node) override {
    if (options_.scale_in.empty()) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    queue_.push_back({"scale-in", options_.scale_in, node, ""});
    return absl::OkStatus();
  }
  std::vector<std::pair<std::string, std::string>> Ended() override {
    absl::MutexLock lock(&mu_);
    return std::exchange(failed_, {});
  }

 private:
  struct Command {
    std::string action, line, node, model;
  };

  void Work() {
    absl::MutexLock lock(&mu_);
    while (true) {
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      Command c = queue_.front();
      queue_.pop_front();
      mu_.Unlock();
      const std::string error = Run(c);
      mu_.Lock();
      // A failed scale-out is a failed start (the autoscaler counts it); a failed scale-in
      // is logged (the node has already left the cluster).
      if (!error.empty() && c.action == "scale-out") failed_.emplace_back(c.node, error);
    }
  }

  std::string Run(const Command& c) {
    std::error_code ec;
    fs::create_directories(options_.scratch_dir, ec);
    const std::string log = (fs::path(options_.scratch_dir) / absl::StrCat(c.action, "-", c.node, ".log")).string();
    auto p = core::Process::Start({"/bin/sh", "-c", c.line}, log,
                                  {"KENNEL_NODE=" + c.node, "KENNEL_MODEL=" + c.model,
                                   "KENNEL_COORDINATOR=" + options_.coordinator, "KENNEL_ACTION=" + c.action});
    std::string error;
    if (!p.ok()) {
      error = std::string(p.status().message());
    } else {
      auto code = (*p)->Wait(options_.timeout);
      if (!code.ok()) {
        (*p)->Signal(SIGKILL);
        (void)(*p)->Wait(absl::Seconds(5));
        error = absl::StrCat("ran past its timeout of ", absl::FormatDuration(options_.timeout));
      } else if (*code != 0) {
        std::string out = (*p)->Log();
        if (out.size() > 400) out = out.substr(out.size() - 400);
        error = absl::StrCat("exit status ", *code, ": ", out);
      }
    }
    if (error.empty()) {
      LOG(INFO) << "command provider: " << c.action << " of " << c.node << " done (log " << log << ")";
    } else {
      LOG(WARNING) << "command provider: " << c.action << " of " << c.node << " failed: " << error;
    }
    return error;
  }

  const CommandProviderOptions options_;
  absl::Mutex mu_;
  std::deque<Command> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, std::string>> failed_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<NodeProvider>> MakeLocalProvider(LocalProviderOptions options) {
  std::error_code ec;
  if (!fs::exists(options.inference_binary, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("local provider: no kennel-inference at ", options.inference_binary));
  }
  if (options.first_core >= 0 && !fs::exists("/usr/bin/taskset", ec)) {
    return absl::InvalidArgumentError("local provider: pinning nodes to cores needs /usr/bin/taskset (util-linux)");
  }
  return std::make_unique<LocalProvider>(std::move(options));
}

absl::StatusOr<std::unique_ptr<NodeProvider>> MakeCommandProvider(CommandProviderOptions options) {
  if (options.scale_out.empty()) {
    return absl::InvalidArgumentError("command provider: a scale-out command is needed (--autoscale_scale_out)");
  }
  return std::make_unique<CommandProvider>(std::move(options));
}

}  // namespace kennel::coordinator
