#include "cli/dataset_command.h"

#include <filesystem>
#include <iostream>
#include <map>

#include "absl/strings/str_cat.h"
#include "cli/output.h"
#include "core/dataset_index.h"

namespace kennel::cli {
namespace {

struct DatasetOptions {
  std::string root;
  std::string format = "auto";
  std::string split = "train";
  bool show_all_classes = false;
};

int Run(const DatasetOptions& opts, const GlobalOptions& global) {
  std::string format = opts.format;
  if (format == "auto") {
    format = "folder";
    std::error_code ec;
    for (const char* f : {"train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte",
                          "t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte"}) {
      if (std::filesystem::exists(std::filesystem::path(opts.root) / f, ec)) format = "idx";
    }
  }
  absl::StatusOr<v1::DatasetIndex> index =
      format == "idx" ? core::IndexFashionMnist(opts.root, opts.split)
                      : core::IndexImageFolder(opts.root, opts.split);
  if (!index.ok()) return Fail(index.status());

  std::map<int, int64_t> per_class;
  for (const auto& s : index->samples()) ++per_class[s.label()];
  if (global.json()) {
    nlohmann::json classes = nlohmann::json::array();
    for (int c = 0; c < index->class_names_size(); ++c) {
      classes.push_back({{"label", c}, {"name", index->class_names(c)}, {"samples", per_class[c]}});
    }
    PrintJson({{"name", index->name()},
               {"format", format},
               {"samples", index->samples_size()},
               {"classes", classes},
               {"skipped", index->skipped()},
               {"skipped_examples", index->skipped_examples()},
               {"fingerprint", index->fingerprint()}});
    return kExitOk;
  }
  std::cout << index->name() << ": " << index->samples_size() << " samples in "
            << index->class_names_size() << " classes, " << index->skipped()
            << " files skipped\nfingerprint " << index->fingerprint() << "\n\n";
  std::vector<std::vector<std::string>> rows;
  const int shown = opts.show_all_classes ? index->class_names_size()
                                          : std::min(index->class_names_size(), 20);
  for (int c = 0; c < shown; ++c) {
    rows.push_back({std::to_string(c), index->class_names(c), std::to_string(per_class[c])});
  }
  PrintTable({"LABEL", "CLASS", "SAMPLES"}, rows);
  if (shown < index->class_names_size()) {
    std::cout << "... " << index->class_names_size() - shown << " more (--all-classes)\n";
  }
  for (const auto& example : index->skipped_examples()) std::cout << "skipped: " << example << "\n";
  return kExitOk;
}

}  // namespace

void AddDatasetCommand(CLI::App& app, const GlobalOptions& global) {
  auto opts = std::make_shared<DatasetOptions>();
  CLI::App* cmd = app.add_subcommand(
      "dataset",
      "Index a dataset as the coordinator would and summarise it: a dogImages-style folder "
      "(<root>/<split>/NNN.Class_Name/*.jpg) or IDX files (Fashion-MNIST).");
  cmd->add_option("root", opts->root, "Dataset root folder")
      ->default_val(std::string(core::kDebianFashionMnistRoot))
      ->capture_default_str();
  cmd->add_option("--format", opts->format, "auto, folder or idx")
      ->check(CLI::IsMember({"auto", "folder", "idx"}))
      ->capture_default_str();
  cmd->add_option("--split", opts->split, "train, valid or test")->capture_default_str();
  cmd->add_flag("--all-classes", opts->show_all_classes, "List every class, not the first 20");
  cmd->callback([opts, &global] { throw CLI::RuntimeError(Run(*opts, global)); });
}

}  // namespace kennel::cli
