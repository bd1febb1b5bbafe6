#include "cli/train_command.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/client.h"
#include "cli/cluster_commands.h"
#include "cli/interrupt.h"
#include "core/dataset_index.h"
#include "core/file_type.h"
#include "core/files.h"
#include "core/grpc_status.h"
#include "core/model_spec.h"

namespace kennel::cli {
namespace {

// The value a flag contributes: with a config file, only a flag given on the command line;
// without one, any value the flag holds (given, or the command's own default).
template <typename T>
const std::optional<T>& Pick(const std::optional<T>& value, const char* flag, const TrainFlags& f, const CLI::App& cmd) {
  static const std::optional<T> kNone;
  return (f.config.empty() && !f.base.has_value()) || cmd.count(flag) > 0 ? value : kNone;
}

absl::StatusOr<v1::JobSpec> BuildSpec(const TrainFlags& f, const CLI::App& cmd) {
  v1::JobSpec spec = f.base.value_or(v1::JobSpec());
  if (!f.config.empty()) {
    auto text = core::ReadFile(f.config, 1 << 20);
    if (!text.ok()) return text.status();
    auto parsed = google::protobuf::util::JsonStringToMessage(*text, &spec);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(f.config, " is not a JobSpec in JSON: ",
                                                     parsed.message().as_string()));
    }
  }
  auto given = [&](const char* flag) { return (f.config.empty() && !f.base.has_value()) || cmd.count(flag) > 0; };
  if (given("--name")) spec.set_name(f.name);
  if (auto& v = Pick(f.world_size, "--world-size", f, cmd)) spec.set_world_size(*v);
  if (auto& v = Pick(f.min_world_size, "--min-world-size", f, cmd)) spec.set_min_world_size(*v);
  if (auto& v = Pick(f.backend, "--backend", f, cmd)) spec.set_backend(*v);
  auto& data = *spec.mutable_dataset();
  if (given("--dataset")) data.set_root(f.dataset);
  if (given("--format") || data.format() == v1::DatasetIndex::FORMAT_UNSPECIFIED) {
    std::string format = f.format;
    if (format == "auto") {
      std::error_code ec;
      format = std::filesystem::exists(std::filesystem::path(data.root()) / "train", ec) ? "folder" : "idx";
    }
    data.set_format(format == "idx" ? v1::DatasetIndex::IDX : v1::DatasetIndex::IMAGE_FOLDER);
  }
  const bool idx = data.format() == v1::DatasetIndex::IDX;
  if (auto& v = Pick(f.max_train_samples, "--max-train-samples", f, cmd)) data.set_max_train_samples(*v);
  if (auto& v = Pick(f.max_eval_samples, "--max-eval-samples", f, cmd)) data.set_max_eval_samples(*v);

  auto& model = *spec.mutable_model();
  if (cmd.count("--model-file") > 0) {
    if (cmd.count("--arch") > 0 || cmd.count("--head") > 0) {
      return absl::InvalidArgumentError("--model-file trains that TorchScript module: drop --arch and --head");
    }
    // The path is the trainers'; where it is here too, a compiled package is caught now.
    if (core::DetectFileTypeOfPath(f.model_file) == core::FileType::kAotiPackage) {
      return absl::InvalidArgumentError(absl::StrCat(
          f.model_file, " is an AOTInductor package, which is served, not trained: train the model as TorchScript "
                        "(torch.jit.script, saved with torch.jit.save) and compile the trained one"));
    }
    model.set_architecture(v1::TORCHSCRIPT);
    model.set_in_channels(f.in_channels > 0 ? f.in_channels : 3);
    spec.mutable_training()->set_model_file(f.model_file);
  } else if ((given("--arch") && !f.arch.empty()) || model.architecture() == v1::ARCHITECTURE_UNSPECIFIED) {
    auto arch = core::ParseArchitecture(f.arch.empty() ? (idx ? "small_cnn" : "resnet50") : f.arch);
    if (!arch.ok()) return arch.status();
    model.set_architecture(*arch);
  }
  if (auto& v = Pick(f.classes, "--classes", f, cmd)) model.set_num_classes(*v);
  if (given("--head")) model.set_head(f.head == "mlp" ? v1::MLP : v1::LINEAR);
  const bool small = model.architecture() == v1::SMALL_CNN;
  if (model.in_channels() == 0) model.set_in_channels(small ? 1 : 3);

  // Preprocessing: the architecture's defaults, then the file's values, then the flags.
  auto& pre = *spec.mutable_preprocess();
  const v1::PreprocessSpec defaults = core::DefaultPreprocess(model.architecture(), f.image_size.value_or(0));
  if (cmd.count("--image-size") > 0 || pre.height() == 0) {
    pre.set_height(defaults.height());
    pre.set_width(defaults.width());
    if (cmd.count("--resize-shorter") == 0) pre.set_resize_shorter(defaults.resize_shorter());
  }
  if (auto& v = Pick(f.resize_shorter, "--resize-shorter", f, cmd)) pre.set_resize_shorter(*v);
  pre.set_channels(model.in_channels());
  if (cmd.count("--mean") > 0 || pre.mean().empty()) {
    pre.clear_mean();
    for (float v : f.mean.empty() ? std::vector<float>(defaults.mean().begin(), defaults.mean().end()) : f.mean) {
      pre.add_mean(v);
    }
  }
  if (cmd.count("--std") > 0 || pre.std().empty()) {
    pre.clear_std();
    for (float v : f.std.empty() ? std::vector<float>(defaults.std().begin(), defaults.std().end()) : f.std) {
      pre.add_std(v);
    }
  }

  auto& t = *spec.mutable_training();
  if (auto& v = Pick(f.epochs, "--epochs", f, cmd)) t.set_epochs(*v);
  if (auto& v = Pick(f.batch_size, "--batch-size", f, cmd)) t.set_batch_size(*v);
  if (auto& v = Pick(f.optimizer, "--optimizer", f, cmd)) t.set_optimizer(*v == "adamw" ? v1::ADAMW : v1::SGD);
  if (auto& v = Pick(f.lr, "--lr", f, cmd)) t.set_learning_rate(*v);
  if (auto& v = Pick(f.momentum, "--momentum", f, cmd)) t.set_momentum(*v);
  if (auto& v = Pick(f.weight_decay, "--weight-decay", f, cmd)) t.set_weight_decay(*v);
  if (auto& v = Pick(f.schedule, "--schedule", f, cmd)) {
    t.set_schedule(*v == "cosine" ? v1::COSINE : *v == "step" ? v1::STEP : v1::CONSTANT);
  }
  if (auto& v = Pick(f.warmup_steps, "--warmup-steps", f, cmd)) t.set_warmup_steps(*v);
  if (auto& v = Pick(f.seed, "--seed", f, cmd)) t.set_seed(*v);
  if (given("--augment")) t.set_augment(f.augment);
  if (given("--freeze-backbone")) t.set_freeze_backbone(f.freeze_backbone);
  if (given("--mixed-precision")) t.set_mixed_precision(f.mixed_precision);
  if (given("--init-weights")) t.set_init_weights(f.init_weights);
  if (auto& v = Pick(f.checkpoint_every, "--checkpoint-every", f, cmd)) t.set_checkpoint_every_steps(*v);
  if (auto& v = Pick(f.checkpoint_interval_s, "--checkpoint-interval", f, cmd)) t.set_checkpoint_interval_s(*v);
  if (auto& v = Pick(f.data_workers, "--data-workers", f, cmd)) t.set_data_workers(*v);
  if (auto& v = Pick(f.torch_threads, "--torch-threads", f, cmd)) t.set_torch_threads(*v);
  if (auto& v = Pick(f.collective_timeout_s, "--collective-timeout", f, cmd)) t.set_collective_timeout_s(*v);
  if (auto& v = Pick(f.grad_compression, "--grad-compression", f, cmd)) {
    t.set_gradient_compression(*v == "fp16"       ? v1::FP16
                               : *v == "bf16"     ? v1::BF16
                               : *v == "powersgd" ? v1::POWERSGD
                                                  : v1::GRADIENT_COMPRESSION_UNSPECIFIED);
  }
  if (auto& v = Pick(f.powersgd_rank, "--powersgd-rank", f, cmd)) t.set_powersgd_rank(*v);
  if (auto& v = Pick(f.powersgd_warmup_steps, "--powersgd-warmup", f, cmd)) t.set_powersgd_warmup_steps(*v);
  return spec;
}

std::string Bar(double fraction, int width) {
  const int filled = static_cast<int>(fraction * width + 0.5);
  return absl::StrCat("[", std::string(std::clamp(filled, 0, width), '#'),
                      std::string(width - std::clamp(filled, 0, width), '.'), "]");
}

std::string ProgressLine(const v1::JobStatus& job) {
  const auto& s = job.last_step();
  const int epochs = job.spec().training().epochs();
  if (job.state() == v1::PENDING || job.state() == v1::RECOVERING) {
    return absl::StrCat(absl::AsciiStrToLower(v1::JobState_Name(job.state())), ": ", job.message());
  }
  if (s.steps_per_epoch() == 0) return "starting: forming the group, loading data";
  const double done = (static_cast<double>(s.epoch()) + static_cast<double>(s.step()) / s.steps_per_epoch()) / epochs;
  std::string acc = job.epochs().empty() ? "-" : absl::StrFormat("%.4f", job.epochs().rbegin()->eval_accuracy());
  return absl::StrFormat("epoch %d/%d %s step %d/%d  loss %.4f  acc %s  %.0f img/s", s.epoch() + 1, epochs,
                         Bar(done, 24), s.step(), s.steps_per_epoch(), s.loss(), acc, s.images_per_second());
}

int Train(const TrainFlags& flags, bool wait, bool detach, const CLI::App& cmd, const GlobalOptions& global) {
  auto spec = BuildSpec(flags, cmd);
  if (!spec.ok()) return Fail(spec.status());
  auto stub = AdminStub(global.coordinator);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = *spec;
  v1::JobStatus job;
  grpc::Status rpc = stub->SubmitJob(Context(600).get(), request, &job);
  if (!rpc.ok()) return Fail(RpcError(rpc, Peer::kCoordinator, global.coordinator));
  if (global.json() && detach) {
    PrintJson(ProtoToJson(job));
    return kExitOk;
  }
  std::cerr << "submitted " << job.id() << ": " << job.spec().name() << " ("
            << core::ArchitectureName(job.spec().model().architecture()) << ", " << job.train_samples()
            << " training samples, world size " << job.spec().world_size() << ")\n";
  if (detach) {
    std::cout << job.id() << "\n";
    return kExitOk;
  }
  return FollowJob(global, job.id(), wait || global.json());
}

}  // namespace

absl::StatusOr<v1::JobSpec> SpecFromFlags(const TrainFlags& flags, const CLI::App& cmd) { return BuildSpec(flags, cmd); }

int FollowJob(const GlobalOptions& global, const std::string& job_id, bool quiet) {
  auto stub = AdminStub(global.coordinator);
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  const InterruptWatch ctrl_c;
  v1::JobStatus last;
  bool have = false;
  int shown_epochs = 0;
  while (true) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    auto reader = stub->WatchJob(&context, request);
    std::atomic<bool> done{false};
    std::thread interrupt([&] {
      while (!done && !ctrl_c.interrupted()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (ctrl_c.interrupted()) context.TryCancel();
    });
    v1::JobStatus update;
    while (reader->Read(&update)) {
      last = update;
      have = true;
      if (quiet) continue;
      for (; shown_epochs < last.epochs_size(); ++shown_epochs) {
        const auto& e = last.epochs(shown_epochs);
        std::cerr << (tty ? "\r\033[K" : "")
                  << absl::StrFormat("epoch %d: train loss %.4f, eval loss %.4f, eval accuracy %.4f, %.0f images/s, %.1fs\n",
                                     e.epoch() + 1, e.train_loss(), e.eval_loss(), e.eval_accuracy(),
                                     e.images_per_second(), e.seconds());
      }
      if (tty) std::cerr << "\r\033[K" << ProgressLine(last) << std::flush;
    }
    done = true;
    interrupt.join();
    grpc::Status status = reader->Finish();
    if (ctrl_c.interrupted()) {
      if (tty && !quiet) std::cerr << "\n";
      std::cerr << "detached; " << job_id << " keeps running (kennelctl job " << job_id << ")\n";
      return kExitOk;
    }
    const bool ended = have && (last.state() == v1::SUCCEEDED || last.state() == v1::FAILED ||
                                last.state() == v1::CANCELLED);
    if (ended) break;
    if (!status.ok() && status.error_code() != grpc::StatusCode::UNAVAILABLE) {
      return Fail(RpcError(status, Peer::kCoordinator, global.coordinator));
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));  // Coordinator restarting: watch again.
  }
  if (tty && !quiet) std::cerr << "\r\033[K";
  if (global.json()) {
    PrintJson(ProtoToJson(last));
  } else {
    std::cout << job_id << " " << absl::AsciiStrToLower(v1::JobState_Name(last.state()));
    if (last.model_version() > 0) std::cout << ": model " << last.model_name() << " version " << last.model_version();
    if (!last.epochs().empty()) std::cout << absl::StrFormat(", eval accuracy %.4f", last.epochs().rbegin()->eval_accuracy());
    if (!last.message().empty()) std::cout << " (" << last.message() << ")";
    std::cout << "\n";
  }
  return JobExitCode(last);
}

namespace {

// An option that fills `target` only when given; `target`'s value (if any) is shown as the
// default.
template <typename T>
CLI::Option* Optional(CLI::App& cmd, const std::string& name, std::optional<T>& target, const std::string& help) {
  CLI::Option* option = cmd.add_option_function<T>(name, [&target](const T& v) { target = v; }, help);
  if (target.has_value()) {
    if constexpr (std::is_same_v<T, std::string>) {
      option->default_str(*target);
    } else {
      option->default_str(absl::StrCat(*target));
    }
  }
  return option;
}

// CLI11's Range lets NaN through (every comparison with NaN is false).
const CLI::Validator kFinite(
    [](std::string& text) -> std::string {
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (end == text.c_str() || *end != '\0') return "not a number: " + text;
      return std::isfinite(v) ? "" : "must be a finite number, not " + text;
    },
    "FINITE");

}  // namespace

void AddJobFlags(CLI::App& cmd, TrainFlags& f) {
  cmd.add_option("--config", f.config, "JobSpec as JSON (proto3 field names); flags given override it")
      ->check(CLI::ExistingFile);
  cmd.add_option("--name", f.name, "Name to register the model under")->capture_default_str();
  cmd.add_option("--dataset", f.dataset, "Dataset root on the coordinator: IDX files (Fashion-MNIST) or a dogImages-style folder")->capture_default_str();
  cmd.add_option("--format", f.format, "auto, idx or folder")->check(CLI::IsMember({"auto", "idx", "folder"}))->capture_default_str();
  cmd.add_option("--arch", f.arch, "small_cnn, resnet18, resnet34, resnet50 (default by dataset)")
      ->check(CLI::IsMember({"small_cnn", "resnet18", "resnet34", "resnet50"}, CLI::ignore_case));
  cmd.add_option("--head", f.head, "linear, or mlp (Linear-ReLU-Linear, as the dog-breed seed)")->check(CLI::IsMember({"linear", "mlp"}))->capture_default_str();
  Optional(cmd, "--classes", f.classes, "Number of classes (default: from the dataset)")->check(CLI::Range(1, 1000000));
  Optional(cmd, "--world-size,-w", f.world_size, "Trainers to train on")->check(CLI::Range(1, 1024));
  Optional(cmd, "--min-world-size", f.min_world_size,
           "Elastic: after losing a trainer with none free to replace it, go on with as few as this many "
           "(every sample of the epoch still trained on once); grow back at an epoch end (default: "
           "--world-size, never fewer)")
      ->check(CLI::Range(1, 1024));
  Optional(cmd, "--epochs,-e", f.epochs, "Epochs")->check(CLI::Range(1, 10000));
  Optional(cmd, "--batch-size,-b", f.batch_size, "Batch size per trainer (default 64)")->check(CLI::Range(1, 65536));
  Optional(cmd, "--optimizer", f.optimizer, "sgd or adamw (default sgd)")->check(CLI::IsMember({"sgd", "adamw"}));
  Optional(cmd, "--lr", f.lr, "Learning rate, in (0, 100) (default 0.01 for SGD, 0.001 for AdamW)")
      ->check(kFinite)
      ->check(CLI::Range(std::numeric_limits<double>::min(), 100.0));
  Optional(cmd, "--momentum", f.momentum, "SGD momentum in [0, 1) (default 0.9; 0 is plain SGD)")->check(kFinite)->check(CLI::Range(0.0, 0.999999999));
  Optional(cmd, "--weight-decay", f.weight_decay, "Weight decay (default 0)")->check(kFinite)->check(CLI::Range(0.0, 1e6));
  Optional(cmd, "--schedule", f.schedule, "constant, step or cosine (default constant)")->check(CLI::IsMember({"constant", "step", "cosine"}));
  Optional(cmd, "--warmup-steps", f.warmup_steps, "Linear warm-up steps (default 0)")->check(CLI::Range(0, 100000000));
  Optional(cmd, "--seed", f.seed, "Seed for initialisation, shuffling and augmentation (default 0)");
  cmd.add_flag("--augment", f.augment, "RandomResizedCrop + horizontal flip");
  cmd.add_flag("--freeze-backbone", f.freeze_backbone,
               "Train only the head (needs --init-weights; with --model-file: the module's last child, e.g. "
               "classifier. or fc.)");
  cmd.add_option("--model-file", f.model_file,
                 "Train this TorchScript module (torch.jit.script or trace, not frozen; the path on every "
                 "trainer) instead of a built-in architecture; its output is the logits")
      ->check(CLI::ExistingFile);
  cmd.add_option("--in-channels", f.in_channels, "With --model-file: 1 or 3 input channels (default 3)")
      ->check(CLI::IsMember({1, 3}));
  cmd.add_flag("--mixed-precision", f.mixed_precision,
               "bf16 autocast and channels-last on GPU trainers (needs --backend nccl)");
  cmd.add_option("--init-weights", f.init_weights, "torchvision weights (.pth state_dict or .safetensors) on every trainer");
  Optional(cmd, "--image-size", f.image_size, "Input height and width (default 28 / 224)")->check(CLI::Range(1, 4096));
  Optional(cmd, "--resize-shorter", f.resize_shorter, "Evaluation resize of the shorter side before the center crop (0: resize straight to the input size)")->check(CLI::Range(0, 8192));
  cmd.add_option("--mean", f.mean, "Per-channel mean")->expected(1, 3);
  cmd.add_option("--std", f.std, "Per-channel std")->expected(1, 3);
  Optional(cmd, "--max-train-samples", f.max_train_samples, "Train on a seeded random subset (default: all)")->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  Optional(cmd, "--max-eval-samples", f.max_eval_samples, "Evaluate on a seeded random subset (default: all)")->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  Optional(cmd, "--checkpoint-every", f.checkpoint_every, "Also checkpoint every N steps (default 0: off)")->check(CLI::Range(0, 100000000));
  Optional(cmd, "--checkpoint-interval", f.checkpoint_interval_s,
           "Also checkpoint after this many seconds of training since the last checkpoint (default 120; 0: "
           "off). Checkpoints are always taken at epoch ends.")
      ->check(CLI::Range(0, 86400 * 7));
  Optional(cmd, "--data-workers", f.data_workers, "Decode/augment threads per trainer (default 2)")->check(CLI::Range(1, 256));
  Optional(cmd, "--torch-threads", f.torch_threads, "Torch threads per trainer (default 1)")->check(CLI::Range(1, 256));
  Optional(cmd, "--backend", f.backend, "gloo (CPU) or nccl (GPU) (default gloo)")->check(CLI::IsMember({"gloo", "nccl"}));
  Optional(cmd, "--collective-timeout", f.collective_timeout_s, "Seconds before a collective fails naming the missing rank (default 60)")->check(CLI::Range(1, 86400));
  Optional(cmd, "--grad-compression", f.grad_compression,
           "Gradients on the wire: none, fp16 or bf16 (half the bytes between trainers), or powersgd "
           "(each weight matrix's gradient as two rank-r factors with error feedback: tens of times "
           "fewer bytes; default none)")
      ->check(CLI::IsMember({"none", "fp16", "bf16", "powersgd"}));
  Optional(cmd, "--powersgd-rank", f.powersgd_rank, "PowerSGD's rank r (default 4; higher: closer to the "
           "uncompressed gradient, more bytes)")->check(CLI::Range(1, 64));
  Optional(cmd, "--powersgd-warmup", f.powersgd_warmup_steps,
           "Steps all-reduced uncompressed before PowerSGD starts (default 100)")->check(CLI::Range(0, 100000000));
}

void AddTrainCommand(CLI::App& app, const GlobalOptions& global) {
  auto f = std::make_shared<TrainFlags>();
  auto wait = std::make_shared<bool>(false), detach = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Submit a data-parallel training job and follow it. Defaults train the small CNN on "
      "Debian's Fashion-MNIST on 2 trainers; a dogImages-style folder defaults to ResNet-50 at "
      "224x224 with ImageNet normalisation.");
  AddJobFlags(*cmd, *f);
  cmd->add_flag("--wait", *wait, "Block until the job ends without a progress display (for scripts)");
  cmd->add_flag("--detach", *detach, "Print the job id and return at once");
  cmd->callback([f, wait, detach, cmd, &global] { throw CLI::RuntimeError(Train(*f, *wait, *detach, *cmd, global)); });
}

}  // namespace kennel::cli
