#include "core/subprocess.h"

#include <filesystem>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/files.h"

namespace kennel::core {

absl::StatusOr<std::unique_ptr<Process>> Process::Start(const std::vector<std::string>& argv,
                                                        const std::string& log_file,
                                                        const std::vector<std::string>& env,
                                                        const std::string& stderr_file) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // The environment, with `env`'s NAME=VALUE entries replacing inherited ones, built before
  // fork: the child of a threaded parent should only call async-signal-safe functions.
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const auto& add : env) replaced = replaced || add.rfind(name, 0) == 0;
    if (!replaced) environment.push_back(entry);
  }
  environment.insert(environment.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : environment) envp.push_back(e.data());
  envp.push_back(nullptr);
  // The log files are truncated here, before the child exists: a caller that waits for a line
  // in the log must never read what an earlier process left in the same file.
  auto open_log = [](const std::string& path) -> absl::StatusOr<int> {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
    return fd;
  };
  auto out = open_log(log_file);
  if (!out.ok()) return out.status();
  absl::StatusOr<int> err = *out;
  if (!stderr_file.empty()) {
    err = open_log(stderr_file);
    if (!err.ok()) {
      ::close(*out);
      return err.status();
    }
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(*out, STDOUT_FILENO);  // dup2 clears close-on-exec on the copies.
    ::dup2(*err, STDERR_FILENO);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  ::close(*out);
  if (*err != *out) ::close(*err);
  if (pid < 0) return absl::InternalError(absl::StrCat("fork failed: ", std::strerror(errno)));
  return std::unique_ptr<Process>(new Process(pid, log_file));
}

Process::~Process() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::string Process::Log() const {
  auto text = core::ReadFile(log_);
  return text.ok() ? *text : "";
}

absl::StatusOr<std::string> Process::WaitForLine(const std::string& text, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::istringstream lines(Log());
    std::string line;
    while (std::getline(lines, line)) {
      if (line.find(text) != std::string::npos) return line;
    }
    if (!reaped_ && ::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      reaped_ = true;
      return absl::FailedPreconditionError(absl::StrCat("process exited; log:\n", Log()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat("no line with '", text, "'; log:\n", Log()));
}

void Process::Signal(int signal) {
  if (!reaped_) ::kill(pid_, signal);
}

absl::StatusOr<int> Process::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!reaped_) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("process did not exit");
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::FailedPreconditionError("already reaped");
}

absl::StatusOr<std::pair<int, std::string>> RunCommand(const std::vector<std::string>& argv,
                                                       absl::Duration timeout, const std::string& scratch_dir) {
  static int counter = 0;
  const std::string base = absl::StrCat(scratch_dir, "/cmd-", ::getpid(), "-", counter++);
  auto p = Process::Start(argv, base + ".out", {}, base + ".err");
  if (!p.ok()) return p.status();
  auto code = (*p)->Wait(timeout);
  auto err = core::ReadFile(base + ".err");
  if (err.ok() && !err->empty()) std::cerr << "[" << argv[0] << " stderr] " << *err;
  if (!code.ok()) return code.status();
  std::pair<int, std::string> out(*code, (*p)->Log());
  std::error_code ec;
  std::filesystem::remove(base + ".out", ec);
  std::filesystem::remove(base + ".err", ec);
  return out;
}

absl::StatusOr<std::string> FindKennelBinary(const std::string& name, const std::string& build_folder) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (const fs::path& p : {self / name, self.parent_path() / build_folder / name}) {
    if (fs::exists(p, ec)) return p.string();
  }
  return absl::NotFoundError(absl::StrCat("cannot find ", name, " in ", self.string(), " or ",
                                          (self.parent_path() / build_folder).string(),
                                          " (it is installed beside kennelctl)"));
}

}  // namespace kennel::core
