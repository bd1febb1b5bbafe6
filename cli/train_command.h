// kennelctl train: builds a JobSpec from flags (or a JSON config file, flags overriding),
// submits it, then follows the job with a live progress line. Ctrl-C detaches (the job keeps
// running); --wait blocks silently until the job ends; --detach returns at once.
#ifndef KENNEL_CLI_TRAIN_COMMAND_H_
#define KENNEL_CLI_TRAIN_COMMAND_H_

#include <CLI/CLI.hpp>

#include "cli/output.h"
#include "kennel/v1/job.pb.h"

namespace kennel::cli {

void AddTrainCommand(CLI::App& app, const GlobalOptions& global);

// Follows a job until it ends (progress on stderr unless quiet). Returns the job's exit code,
// or kExitOk when the user detached with Ctrl-C.
int FollowJob(const GlobalOptions& global, const std::string& job_id, bool quiet);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_TRAIN_COMMAND_H_
