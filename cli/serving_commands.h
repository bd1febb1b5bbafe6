// kennelctl deploy | classify | bench: rolling a model out to inference nodes, classifying
// files over one ClassifyStream, and load-testing a node.
#ifndef KENNEL_CLI_SERVING_COMMANDS_H_
#define KENNEL_CLI_SERVING_COMMANDS_H_

#include <CLI/CLI.hpp>

#include "cli/load_generator.h"
#include "cli/output.h"

namespace kennel::cli {

void AddServingCommands(CLI::App& app, const GlobalOptions& global);

// Prints a load report as a table line or JSON.
void PrintLoadReport(const LoadReport& report, const GlobalOptions& global, const std::string& title);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_SERVING_COMMANDS_H_
