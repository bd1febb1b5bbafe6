// kennelctl autoscale: a model's autoscaling settings (set, change, turn off) and state; and
// the AUTOSCALING table `kennelctl status` shows.
#ifndef KENNEL_CLI_AUTOSCALE_COMMAND_H_
#define KENNEL_CLI_AUTOSCALE_COMMAND_H_

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "cli/output.h"
#include "kennel/v1/autoscale.pb.h"

namespace kennel::cli {

void AddAutoscaleCommand(CLI::App& app, const GlobalOptions& global);

// The status table's header and one model's row.
std::vector<std::string> AutoscaleHeader();
std::vector<std::string> AutoscaleRow(const kennel::v1::AutoscaleStatus& status);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_AUTOSCALE_COMMAND_H_
