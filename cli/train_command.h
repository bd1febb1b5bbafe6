// kennelctl train: builds a JobSpec from flags (or a JSON config file, flags overriding),
// submits it, then follows the job with a live progress line. Ctrl-C detaches (the job keeps
// running); --wait blocks silently until the job ends; --detach returns at once.
#ifndef KENNEL_CLI_TRAIN_COMMAND_H_
#define KENNEL_CLI_TRAIN_COMMAND_H_

#include <CLI/CLI.hpp>

#include "cli/output.h"
#include "absl/status/statusor.h"
#include "kennel/v1/job.pb.h"

namespace kennel::cli {

// What kennelctl train's flags hold (also used by kennelctl up).
struct TrainFlags {
  std::string config;
  std::string name = "fashion";
  std::string dataset = "/usr/share/datasets/fashion-mnist";
  std::string format = "auto";
  std::string arch;
  std::string head = "linear";
  int classes = 0;
  int world_size = 2;
  int epochs = 5;
  int batch_size = 64;
  std::string optimizer = "sgd";
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 0;
  std::string schedule = "constant";
  int warmup_steps = 0;
  uint64_t seed = 1;
  bool augment = false;
  bool freeze_backbone = false;
  std::string init_weights;
  int image_size = 0;
  int resize_shorter = -1;
  std::vector<float> mean, std;
  int64_t max_train_samples = 0, max_eval_samples = 0;
  int checkpoint_every = 0;
  int data_workers = 0, torch_threads = 0;
  std::string backend = "gloo";
  int collective_timeout_s = 0;
  bool wait = false, detach = false;
};


void AddTrainCommand(CLI::App& app, const GlobalOptions& global);

// The JobSpec the flags describe (no config file, every field from `flags`).
absl::StatusOr<kennel::v1::JobSpec> SpecFromFlags(const TrainFlags& flags);

// Follows a job until it ends (progress on stderr unless quiet). Returns the job's exit code,
// or kExitOk when the user detached with Ctrl-C.
int FollowJob(const GlobalOptions& global, const std::string& job_id, bool quiet);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_TRAIN_COMMAND_H_
