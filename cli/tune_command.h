// kennelctl tune: a hyperparameter search whose trials are ordinary training jobs. The trial
// job comes from the same flags as `kennelctl train` (or --spec, a TuningSpec in JSON, flags
// overriding); --space adds searched fields. It is checked here (the rules in core/tuning.h)
// before anything is sent, then followed with a live leaderboard.
//   kennelctl tune status [ID]   the leaderboard of one search (table or -o json; --watch), or
//                                every search
//   kennelctl tune cancel ID     stops its trials; the best so far is still registered
#ifndef KENNEL_CLI_TUNE_COMMAND_H_
#define KENNEL_CLI_TUNE_COMMAND_H_

#include <string>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "cli/output.h"
#include "kennel/v1/tuning.pb.h"

namespace kennel::cli {

void AddTuneCommand(CLI::App& app, const GlobalOptions& global);

// One --space value: FIELD=log:MIN:MAX, FIELD=uniform:MIN:MAX, FIELD=int:MIN:MAX or
// FIELD=choice:A,B,C. INVALID_ARGUMENT saying what the form is.
absl::StatusOr<kennel::v1::SearchDimension> ParseSearchDimension(const std::string& text);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_TUNE_COMMAND_H_
