// kennelctl: Kennel's admin CLI. Each command lives in its own *_command.cc; this file only
// wires them into one CLI11 app.
#include <CLI/CLI.hpp>

#include "cli/cluster_commands.h"
#include "cli/dataset_command.h"
#include "cli/client.h"
#include "cli/serving_commands.h"
#include "cli/train_command.h"
#include "cli/up_command.h"
#include "cli/output.h"

int main(int argc, char** argv) {
  kennel::cli::GlobalOptions global;
  CLI::App app("kennelctl: show and drive a Kennel cluster (training, models, serving).");
  app.set_help_all_flag("--help-all", "Help for every command");
  app.add_option("-o,--output", global.output, "Output format: table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  global.coordinator = kennel::cli::DefaultCoordinator();
  app.add_option("-c,--coordinator", global.coordinator,
                 "Coordinator host:port (default: $KENNEL_COORDINATOR or 127.0.0.1:7070)")
      ->capture_default_str();
  app.require_subcommand(1);
  kennel::cli::AddClusterCommands(app, global);
  kennel::cli::AddTrainCommand(app, global);
  kennel::cli::AddServingCommands(app, global);
  kennel::cli::AddUpCommand(app, global);
  kennel::cli::AddDatasetCommand(app, global);
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // A command finished; its exit code.
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kennel::cli::kExitUsage;
  }
  return 0;
}
