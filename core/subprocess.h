// Child processes (kennelctl up's local cluster, integration tests): spawn a binary with its
// output captured to a file, wait for a line, signal, reap. The destructor kills (SIGKILL)
// and reaps a process still running, so nothing is left behind. Not thread-safe.
#ifndef KENNEL_CORE_SUBPROCESS_H_
#define KENNEL_CORE_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kennel::core {

class Process {
 public:
  // Starts argv[0] with argv; stdout and stderr go to `log_file` (stderr to `stderr_file`
  // when given).
  static absl::StatusOr<std::unique_ptr<Process>> Start(const std::vector<std::string>& argv,
                                                        const std::string& log_file,
                                                        const std::vector<std::string>& env = {},
                                                        const std::string& stderr_file = "");
  ~Process();

  pid_t pid() const { return pid_; }
  // Waits until the log holds a line containing `text`; returns that line.
  absl::StatusOr<std::string> WaitForLine(const std::string& text, absl::Duration timeout);
  void Signal(int signal);
  // Waits for exit; returns the exit status (or 128 + signal). DEADLINE_EXCEEDED on timeout.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  std::string Log() const;

 private:
  Process(pid_t pid, std::string log) : pid_(pid), log_(std::move(log)) {}
  pid_t pid_;
  std::string log_;
  bool reaped_ = false;
};

// Runs a command to completion; returns (exit code, stdout). Its stderr is echoed to ours;
// `scratch_dir` holds the captured output.
absl::StatusOr<std::pair<int, std::string>> RunCommand(const std::vector<std::string>& argv,
                                                       absl::Duration timeout, const std::string& scratch_dir);

// A Kennel binary beside the running one (installed) or in its folder of a build tree
// (build/<build_folder>/<name>); NOT_FOUND naming both places.
absl::StatusOr<std::string> FindKennelBinary(const std::string& name, const std::string& build_folder);

}  // namespace kennel::core

#endif  // KENNEL_CORE_SUBPROCESS_H_
