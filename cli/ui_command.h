// kennelctl ui: the web console (cli/console_server.h) on the user's own machine, at
// http://127.0.0.1:PORT/, until Ctrl-C.
#ifndef KENNEL_CLI_UI_COMMAND_H_
#define KENNEL_CLI_UI_COMMAND_H_

#include <CLI/CLI.hpp>

namespace kennel::cli {

struct GlobalOptions;
void AddUiCommand(CLI::App& app, const GlobalOptions& global);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_UI_COMMAND_H_
