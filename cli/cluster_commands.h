// kennelctl status | jobs | job ID | cancel ID | models: views of the cluster through the
// coordinator's Admin API.
#ifndef KENNEL_CLI_CLUSTER_COMMANDS_H_
#define KENNEL_CLI_CLUSTER_COMMANDS_H_

#include <CLI/CLI.hpp>

#include "cli/output.h"
#include "kennel/v1/job.pb.h"

namespace kennel::cli {

void AddClusterCommands(CLI::App& app, const GlobalOptions& global);

// Exit code for a job that ended: 0 succeeded, 4 failed or cancelled.
int JobExitCode(const kennel::v1::JobStatus& job);
// "running, epoch 2/5, step 120/469" and the like.
std::string JobProgress(const kennel::v1::JobStatus& job);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_CLUSTER_COMMANDS_H_
