// kennelctl up: Kennel's main job on one machine. Starts a coordinator, trainers and an
// inference node as processes on loopback, trains (Fashion-MNIST and the small CNN by default,
// or a dogImages-style folder with ResNet-50 and torchvision weights), deploys the result,
// streams the test split through ClassifyStream, prints accuracy and throughput, and shuts
// everything down (or keeps it running with --keep-running until Ctrl-C).
#ifndef KENNEL_CLI_UP_COMMAND_H_
#define KENNEL_CLI_UP_COMMAND_H_

#include <CLI/CLI.hpp>

#include "cli/output.h"

namespace kennel::cli {

void AddUpCommand(CLI::App& app, GlobalOptions& global);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_UP_COMMAND_H_
