// `kennelctl dataset`: indexes a dataset the way the coordinator will and prints what it saw
// (classes, sample counts, skipped files, fingerprint), so users can check a dogImages folder
// or the Fashion-MNIST files before training on them.
#ifndef KENNEL_CLI_DATASET_COMMAND_H_
#define KENNEL_CLI_DATASET_COMMAND_H_

#include <CLI/CLI.hpp>

namespace kennel::cli {

struct GlobalOptions;
void AddDatasetCommand(CLI::App& app, const GlobalOptions& global);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_DATASET_COMMAND_H_
