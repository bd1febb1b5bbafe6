// kennelctl: Kennel's admin CLI. Each command lives in its own *_command.cc; this file only
// wires them into one CLI11 app. kennelctl links no LibTorch or OpenCV: `import`, the one
// command that needs them, runs the kennelctl-import helper.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>
#include <string_view>

#include "absl/strings/str_join.h"
#include "cli/client.h"
#include "cli/cluster_commands.h"
#include "cli/autoscale_command.h"
#include "cli/certs_command.h"
#include "cli/dataset_command.h"
#include "cli/import_command.h"
#include "cli/output.h"
#include "cli/serving_commands.h"
#include "cli/train_command.h"
#include "cli/tune_command.h"
#include "cli/ui_command.h"
#include "cli/up_command.h"
#include "core/process_setup.h"

namespace {

// The first word on the command line that is neither a flag nor a global flag's value.
std::string FirstWord(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-o" || arg == "--output" || arg == "-c" || arg == "--coordinator") {
      ++i;
      continue;
    }
    if (!arg.empty() && arg[0] != '-') return std::string(arg);
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = kennel::cli;
  kennel::core::DisableMutexDeadlockDetection();  // Its load generator takes locks per request.
  cli::GlobalOptions global;
  global.coordinator = cli::DefaultCoordinator();
  CLI::App app("kennelctl: show and drive a Kennel cluster (training, models, serving).");
  app.set_help_all_flag("--help-all", "Help for every command");
  app.footer(
      "Exit codes: 0 ok, 1 failed, 2 bad usage or input, 3 coordinator or inference node "
      "unreachable, 4 the job failed or was cancelled.");
  cli::AddGlobalFlags(app, global);
  app.require_subcommand(1);
  cli::AddClusterCommands(app, global);
  cli::AddTrainCommand(app, global);
  cli::AddTuneCommand(app, global);
  cli::AddServingCommands(app, global);
  cli::AddAutoscaleCommand(app, global);
  cli::AddImportCommand(app, global, cli::RunImportHelper(argc, argv));
  cli::AddUpCommand(app, global);
  cli::AddDatasetCommand(app, global);
  cli::AddCertsCommand(app, global);
  cli::AddUiCommand(app, global);
  std::vector<std::string> commands;
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    cli::AddGlobalFlags(*sub, global);
    for (CLI::App* nested : sub->get_subcommands([](CLI::App*) { return true; })) {
      cli::AddGlobalFlags(*nested, global);  // kennelctl tune status ID -o json
    }
    commands.push_back(sub->get_name());
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // A command finished; its exit code.
  } catch (const CLI::ParseError& e) {
    const std::string word = FirstWord(argc, argv);
    if (app.get_subcommands().empty() && !word.empty() && e.get_exit_code() != 0 &&
        std::find(commands.begin(), commands.end(), word) == commands.end()) {
      std::cerr << "kennelctl: unknown command '" << word << "' (commands: " << absl::StrJoin(commands, ", ")
                << "; see kennelctl --help)\n";
      return cli::kExitUsage;
    }
    return app.exit(e) == 0 ? cli::kExitOk : cli::kExitUsage;
  }
  return cli::kExitOk;
}
