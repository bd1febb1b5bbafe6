// kennelctl train: builds a JobSpec from flags (or a JSON config file, flags overriding),
// submits it, then follows the job with a live progress line. Ctrl-C detaches (the job keeps
// running); --wait blocks silently until the job ends; --detach returns at once.
#ifndef KENNEL_CLI_TRAIN_COMMAND_H_
#define KENNEL_CLI_TRAIN_COMMAND_H_

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "cli/output.h"
#include "kennel/v1/job.pb.h"

namespace kennel::cli {

// What the job flags hold; kennelctl train and kennelctl up share them (AddJobFlags). An
// empty optional leaves the field unset, so the coordinator's default applies (and with
// --config, the file's value); a value set here is the command's own default.
struct TrainFlags {
  std::string config;
  // A JobSpec to start from instead of --config's file (kennelctl tune's --spec holds one);
  // flags given on the command line override it as they would the file.
  std::optional<kennel::v1::JobSpec> base;
  std::string name = "fashion";
  std::string dataset = "/usr/share/datasets/fashion-mnist";
  std::string format = "auto";
  std::string arch;
  std::string head = "linear";
  std::optional<int> classes;
  std::optional<int> world_size = 2;
  std::optional<int> min_world_size;
  std::optional<int> epochs = 5;
  std::optional<int> batch_size;
  std::optional<std::string> optimizer;
  std::optional<double> lr, momentum, weight_decay;
  std::optional<std::string> schedule;
  std::optional<int> warmup_steps;
  std::optional<uint64_t> seed;
  bool augment = false;
  bool freeze_backbone = false;
  bool mixed_precision = false;
  std::string init_weights;
  std::string model_file;
  int in_channels = 0;
  std::optional<int> image_size;
  std::optional<int> resize_shorter;
  std::vector<float> mean, std;
  std::optional<int64_t> max_train_samples, max_eval_samples;
  std::optional<int> checkpoint_every;
  std::optional<int> checkpoint_interval_s;
  std::optional<int> data_workers, torch_threads;
  std::optional<std::string> backend;
  std::optional<int> collective_timeout_s;
  std::optional<std::string> grad_compression;
  std::optional<int> powersgd_rank;
  std::optional<int> powersgd_warmup_steps;
};

// Adds the job flags (model, data, hyperparameters, placement) with their checks to `cmd`.
// `f` must outlive parsing.
void AddJobFlags(CLI::App& cmd, TrainFlags& f);

void AddTrainCommand(CLI::App& app, const GlobalOptions& global);

// The JobSpec the flags describe: with a config file, only flags given on the command line
// (cmd.count() > 0) override it; without one, every flag with a value applies.
absl::StatusOr<kennel::v1::JobSpec> SpecFromFlags(const TrainFlags& flags, const CLI::App& cmd);

// Follows a job until it ends (progress on stderr unless quiet). Returns the job's exit code,
// or kExitOk when the user detached with Ctrl-C.
int FollowJob(const GlobalOptions& global, const std::string& job_id, bool quiet);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_TRAIN_COMMAND_H_
