#include "cli/ui_command.h"

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <thread>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/client.h"
#include "cli/console_assets.h"
#include "cli/console_server.h"
#include "cli/interrupt.h"
#include "cli/output.h"
#include "core/subprocess.h"

namespace kennel::cli {
namespace {

// `program` as a path to run: itself when it names a path, else the first executable of that
// name on $PATH ("" when there is none).
std::string OnPath(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':', absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/", program);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

struct UiFlags {
  int port = 7080;
  bool open = false;
};

int Run(const UiFlags& flags, const GlobalOptions& global) {
  if (FindConsoleAsset("/chart.min.js") == nullptr) {
    return Fail(absl::FailedPreconditionError(
        "this kennelctl was built without Chart.js, which the console's charts need: install Debian's "
        "libjs-chart.js (or pass -DKENNEL_CHARTJS=/path/to/chart.min.js to CMake) and rebuild"));
  }
  auto server = ConsoleServer::Start({.coordinator = global.coordinator, .port = flags.port});
  if (!server.ok()) return Fail(server.status());
  const InterruptWatch ctrl_c;
  std::cout << "Kennel console at " << (*server)->url() << " (this machine only; Ctrl-C to stop)" << std::endl;
  // Say at once whether the coordinator answers, and as whom (the page says it too).
  v1::ClusterStatus status;
  auto context = Context(5);
  const grpc::Status rpc = AdminStub(global.coordinator)->GetClusterStatus(context.get(), {}, &status);
  std::cout << "coordinator " << global.coordinator << ": "
            << (rpc.ok() ? absl::StrCat("reachable, as ", status.caller())
                         : absl::StrCat(RpcError(rpc, Peer::kCoordinator, global.coordinator).message(),
                                        " (the page shows it and retries)"))
            << std::endl;
  std::unique_ptr<core::Process> browser;  // Kept: its destructor would stop it.
  if (flags.open) {
    const char* opener = std::getenv("BROWSER");
    const std::string program = opener != nullptr && *opener != '\0' ? opener : "xdg-open";
    const std::string resolved = OnPath(program);
    auto started = resolved.empty() ? absl::StatusOr<std::unique_ptr<core::Process>>(
                                          absl::NotFoundError(absl::StrCat("no ", program, " on $PATH")))
                                    : core::Process::Start({resolved, (*server)->url()}, "/dev/null");
    // xdg-open hands the URL to the desktop's browser and exits; one that fails (no desktop,
    // not installed: exit 127) says so at once.
    absl::StatusOr<int> exited = started.ok() ? (*started)->Wait(absl::Seconds(5)) : started.status();
    if (started.ok() && !exited.ok()) {
      browser = *std::move(started);  // Still running (a browser itself): left to run.
    } else if (!exited.ok() || *exited != 0) {
      std::cerr << "kennelctl: could not open a browser with " << program << " ("
                << (exited.ok() ? absl::StrCat("exit status ", *exited) : std::string(exited.status().message()))
                << "; set $BROWSER): open " << (*server)->url() << " yourself" << std::endl;
    }
  }
  while (!ctrl_c.interrupted()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::cout << "console stopped" << std::endl;
  return kExitOk;
}

}  // namespace

void AddUiCommand(CLI::App& app, const GlobalOptions& global) {
  auto flags = std::make_shared<UiFlags>();
  CLI::App* cmd = app.add_subcommand(
      "ui", "Serve the web console (cluster, jobs, tuning, models, serving; live charts) on this machine");
  cmd->footer(
      "The console listens on 127.0.0.1 only and talks to the coordinator and inference nodes over gRPC\n"
      "with your credentials (KENNEL_TLS_CA, KENNEL_TLS_CERT, KENNEL_TLS_KEY): each view shows what your\n"
      "role may read, and says why when it may not. Read-only. To use it from another machine, forward\n"
      "the port: ssh -L 7080:127.0.0.1:7080 HOST, then open http://127.0.0.1:7080/.");
  cmd->add_option("--port", flags->port, "Port on 127.0.0.1 (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_flag("--open", flags->open, "Open the page in a browser ($BROWSER, else xdg-open)");
  cmd->callback([flags, &global] { throw CLI::RuntimeError(Run(*flags, global)); });
}

}  // namespace kennel::cli
