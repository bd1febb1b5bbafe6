// kennelctl import: turns weights trained elsewhere (torchvision .pth state_dict or
// .safetensors) into a Kennel model artifact, optionally registered with the coordinator as a
// model version `kennelctl deploy` rolls out.
//
// The conversion needs LibTorch, which kennelctl does not link (its other commands start in
// milliseconds): kennelctl parses and checks the flags, then runs the kennelctl-import helper
// beside it with the same command line. Both define the command through AddImportCommand, so
// the flags, help and checks are one.
#ifndef KENNEL_CLI_IMPORT_COMMAND_H_
#define KENNEL_CLI_IMPORT_COMMAND_H_

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "cli/output.h"
#include "kennel/v1/model.pb.h"

namespace kennel::cli {

struct ImportFlags {
  std::string weights;
  std::string name;
  std::string arch;
  std::string head = "linear";
  int head_hidden = 128;
  std::vector<std::string> classes;
  std::string classes_file;
  std::string classes_from;
  int in_channels = 0;
  int image_size = 0;
  int resize_shorter = -1;
  std::vector<float> mean, std;
  std::string interpolation = "bilinear";
  std::string output;
  bool register_model = false;
  std::string output_kind = "logits";  // A TorchScript model's output: logits or probabilities.
};

// True when `path` holds a TorchScript archive (torch.jit.save), judged from its first bytes.
bool IsTorchScriptFile(const std::string& path);

using ImportRunner = std::function<int(const ImportFlags&, const GlobalOptions&)>;

// Adds `import` to `app`; `run` does the work once the flags parsed and passed the checks
// that need no LibTorch.
void AddImportCommand(CLI::App& app, GlobalOptions& global, ImportRunner run);

// kennelctl's runner: replaces this process with kennelctl-import (found next to kennelctl)
// and the same arguments.
ImportRunner RunImportHelper(int argc, char** argv);

// The class names the flags give (--classes, --classes-file, or --classes-from a dogImages
// folder), in output order. INVALID_ARGUMENT / NOT_FOUND saying what is wrong.
absl::StatusOr<std::vector<std::string>> ClassNamesFromFlags(const ImportFlags& flags);

// The model and preprocessing the flags describe (defaults by architecture).
absl::StatusOr<kennel::v1::ModelSpec> ModelSpecFromFlags(const ImportFlags& flags);
absl::StatusOr<kennel::v1::PreprocessSpec> PreprocessFromFlags(const ImportFlags& flags,
                                                              const kennel::v1::ModelSpec& model);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_IMPORT_COMMAND_H_
