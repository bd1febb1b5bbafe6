#include "cli/train_command.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/client.h"
#include "cli/cluster_commands.h"
#include "core/dataset.h"
#include "core/files.h"
#include "core/grpc_status.h"
#include "core/models.h"

namespace kennel::cli {
namespace {

volatile std::sig_atomic_t g_interrupted = 0;

// Flags the user gave explicitly override the config file.
absl::StatusOr<v1::JobSpec> BuildSpec(const TrainFlags& f, const CLI::App* cmd) {
  v1::JobSpec spec;
  if (!f.config.empty()) {
    auto text = core::ReadFile(f.config, 1 << 20);
    if (!text.ok()) return text.status();
    auto parsed = google::protobuf::util::JsonStringToMessage(*text, &spec);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(f.config, " is not a JobSpec in JSON: ",
                                                     parsed.message().as_string()));
    }
  }
  auto given = [&](const char* flag) { return f.config.empty() || cmd == nullptr || cmd->count(flag) > 0; };
  if (given("--name")) spec.set_name(f.name);
  if (given("--world-size")) spec.set_world_size(f.world_size);
  if (given("--backend")) spec.set_backend(f.backend);
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
  if (given("--max-train-samples")) data.set_max_train_samples(f.max_train_samples);
  if (given("--max-eval-samples")) data.set_max_eval_samples(f.max_eval_samples);

  auto& model = *spec.mutable_model();
  if (given("--arch") || model.architecture() == v1::ARCHITECTURE_UNSPECIFIED) {
    auto arch = core::ParseArchitecture(f.arch.empty() ? (idx ? "small_cnn" : "resnet50") : f.arch);
    if (!arch.ok()) return arch.status();
    model.set_architecture(*arch);
  }
  if (given("--classes")) model.set_num_classes(f.classes);
  if (given("--head")) model.set_head(f.head == "mlp" ? v1::MLP : v1::LINEAR);
  const bool small = model.architecture() == v1::SMALL_CNN;
  if (model.in_channels() == 0) model.set_in_channels(small ? 1 : 3);

  auto& pre = *spec.mutable_preprocess();
  if (given("--image-size") || pre.height() == 0) {
    const int size = f.image_size > 0 ? f.image_size : (small ? 28 : 224);
    pre.set_height(size);
    pre.set_width(size);
  }
  if (given("--resize-shorter") || (f.config.empty() && !small)) {
    pre.set_resize_shorter(f.resize_shorter >= 0 ? f.resize_shorter : (small ? 0 : pre.height() * 8 / 7));
  }
  pre.set_channels(model.in_channels());
  if (given("--mean") || pre.mean().empty()) {
    pre.clear_mean();
    if (!f.mean.empty()) for (float v : f.mean) pre.add_mean(v);
    else if (small) pre.add_mean(0.2860f);
    else for (float v : {0.485f, 0.456f, 0.406f}) pre.add_mean(v);  // ImageNet, as torchvision.
  }
  if (given("--std") || pre.std().empty()) {
    pre.clear_std();
    if (!f.std.empty()) for (float v : f.std) pre.add_std(v);
    else if (small) pre.add_std(0.3530f);
    else for (float v : {0.229f, 0.224f, 0.225f}) pre.add_std(v);
  }

  auto& t = *spec.mutable_training();
  if (given("--epochs")) t.set_epochs(f.epochs);
  if (given("--batch-size")) t.set_batch_size(f.batch_size);
  if (given("--optimizer")) t.set_optimizer(f.optimizer == "adamw" ? v1::ADAMW : v1::SGD);
  if (given("--lr")) t.set_learning_rate(f.lr);
  if (given("--momentum")) t.set_momentum(f.momentum);
  if (given("--weight-decay")) t.set_weight_decay(f.weight_decay);
  if (given("--schedule")) {
    t.set_schedule(f.schedule == "cosine" ? v1::COSINE : f.schedule == "step" ? v1::STEP : v1::CONSTANT);
  }
  if (given("--warmup-steps")) t.set_warmup_steps(f.warmup_steps);
  if (given("--seed")) t.set_seed(f.seed);
  if (given("--augment")) t.set_augment(f.augment);
  if (given("--freeze-backbone")) t.set_freeze_backbone(f.freeze_backbone);
  if (given("--init-weights")) t.set_init_weights(f.init_weights);
  if (given("--checkpoint-every")) t.set_checkpoint_every_steps(f.checkpoint_every);
  if (given("--data-workers")) t.set_data_workers(f.data_workers);
  if (given("--torch-threads")) t.set_torch_threads(f.torch_threads);
  if (given("--collective-timeout")) t.set_collective_timeout_s(f.collective_timeout_s);
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

int Train(const TrainFlags& flags, const CLI::App& cmd, const GlobalOptions& global) {
  auto spec = BuildSpec(flags, &cmd);
  if (!spec.ok()) return Fail(spec.status());
  auto stub = AdminStub(global.coordinator);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = *spec;
  v1::JobStatus job;
  grpc::Status rpc = stub->SubmitJob(Context(600).get(), request, &job);
  if (!rpc.ok()) {
    if (rpc.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return Fail(absl::UnavailableError(absl::StrCat("cannot reach the coordinator at ", global.coordinator)));
    }
    return Fail(core::FromGrpcStatus(rpc));
  }
  if (global.json() && flags.detach) {
    PrintJson(ProtoToJson(job));
    return kExitOk;
  }
  std::cerr << "submitted " << job.id() << ": " << job.spec().name() << " ("
            << core::ArchitectureName(job.spec().model().architecture()) << ", " << job.train_samples()
            << " training samples, world size " << job.spec().world_size() << ")\n";
  if (flags.detach) {
    std::cout << job.id() << "\n";
    return kExitOk;
  }
  return FollowJob(global, job.id(), flags.wait || global.json());
}

}  // namespace

absl::StatusOr<v1::JobSpec> SpecFromFlags(const TrainFlags& flags) { return BuildSpec(flags, nullptr); }

int FollowJob(const GlobalOptions& global, const std::string& job_id, bool quiet) {
  auto stub = AdminStub(global.coordinator);
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  g_interrupted = 0;
  auto previous = std::signal(SIGINT, [](int) { g_interrupted = 1; });
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
      while (!done && !g_interrupted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (g_interrupted) context.TryCancel();
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
    if (g_interrupted) {
      std::signal(SIGINT, previous);
      if (tty && !quiet) std::cerr << "\n";
      std::cerr << "detached; " << job_id << " keeps running (kennelctl job " << job_id << ")\n";
      return kExitOk;
    }
    const bool ended = have && (last.state() == v1::SUCCEEDED || last.state() == v1::FAILED ||
                                last.state() == v1::CANCELLED);
    if (ended) break;
    if (!status.ok() && status.error_code() != grpc::StatusCode::UNAVAILABLE) {
      std::signal(SIGINT, previous);
      return Fail(core::FromGrpcStatus(status));
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));  // Coordinator restarting: watch again.
  }
  std::signal(SIGINT, previous);
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

void AddTrainCommand(CLI::App& app, const GlobalOptions& global) {
  auto f = std::make_shared<TrainFlags>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Submit a data-parallel training job and follow it. Defaults train the small CNN on "
      "Debian's Fashion-MNIST on 2 trainers; a dogImages-style folder defaults to ResNet-50 at "
      "224x224 with ImageNet normalisation.");
  cmd->add_option("--config", f->config, "JobSpec as JSON (proto3 field names); flags given override it");
  cmd->add_option("--name", f->name, "Name to register the model under")->capture_default_str();
  cmd->add_option("--dataset", f->dataset, "Dataset root on the coordinator")->capture_default_str();
  cmd->add_option("--format", f->format, "auto, idx or folder")->check(CLI::IsMember({"auto", "idx", "folder"}))->capture_default_str();
  cmd->add_option("--arch", f->arch, "small_cnn, resnet18, resnet34, resnet50 (default by dataset)");
  cmd->add_option("--head", f->head, "linear, or mlp (Linear-ReLU-Linear, as the dog-breed seed)")->check(CLI::IsMember({"linear", "mlp"}))->capture_default_str();
  cmd->add_option("--classes", f->classes, "Number of classes (0: from the dataset)")->capture_default_str();
  cmd->add_option("--world-size,-w", f->world_size, "Trainers to train on")->check(CLI::Range(1, 1024))->capture_default_str();
  cmd->add_option("--epochs,-e", f->epochs, "Epochs")->check(CLI::Range(1, 10000))->capture_default_str();
  cmd->add_option("--batch-size,-b", f->batch_size, "Batch size per trainer")->check(CLI::Range(1, 65536))->capture_default_str();
  cmd->add_option("--optimizer", f->optimizer, "sgd or adamw")->check(CLI::IsMember({"sgd", "adamw"}))->capture_default_str();
  cmd->add_option("--lr", f->lr, "Learning rate")->capture_default_str();
  cmd->add_option("--momentum", f->momentum, "SGD momentum")->capture_default_str();
  cmd->add_option("--weight-decay", f->weight_decay, "Weight decay")->capture_default_str();
  cmd->add_option("--schedule", f->schedule, "constant, step or cosine")->check(CLI::IsMember({"constant", "step", "cosine"}))->capture_default_str();
  cmd->add_option("--warmup-steps", f->warmup_steps, "Linear warm-up steps")->capture_default_str();
  cmd->add_option("--seed", f->seed, "Seed for initialisation, shuffling and augmentation")->capture_default_str();
  cmd->add_flag("--augment", f->augment, "RandomResizedCrop + horizontal flip");
  cmd->add_flag("--freeze-backbone", f->freeze_backbone, "Train only the head (needs --init-weights)");
  cmd->add_option("--init-weights", f->init_weights, "torchvision weights (.pth state_dict or .safetensors) on every trainer");
  cmd->add_option("--image-size", f->image_size, "Input height and width (default 28 / 224)");
  cmd->add_option("--resize-shorter", f->resize_shorter, "Evaluation resize of the shorter side before the center crop (0: resize straight to the input size)");
  cmd->add_option("--mean", f->mean, "Per-channel mean")->expected(1, 3);
  cmd->add_option("--std", f->std, "Per-channel std")->expected(1, 3);
  cmd->add_option("--max-train-samples", f->max_train_samples, "Train on a seeded random subset (0: all)");
  cmd->add_option("--max-eval-samples", f->max_eval_samples, "Evaluate on a seeded random subset (0: all)");
  cmd->add_option("--checkpoint-every", f->checkpoint_every, "Checkpoint every N steps (0: epoch ends only)");
  cmd->add_option("--data-workers", f->data_workers, "Decode/augment threads per trainer (0: 2)");
  cmd->add_option("--torch-threads", f->torch_threads, "Torch threads per trainer (0: 1)");
  cmd->add_option("--backend", f->backend, "gloo (CPU) or nccl (GPU)")->check(CLI::IsMember({"gloo", "nccl"}))->capture_default_str();
  cmd->add_option("--collective-timeout", f->collective_timeout_s, "Seconds before a collective fails naming the missing rank (0: 60)");
  cmd->add_flag("--wait", f->wait, "Block until the job ends without a progress display (for scripts)");
  cmd->add_flag("--detach", f->detach, "Print the job id and return at once");
  cmd->callback([f, cmd, &global] { throw CLI::RuntimeError(Train(*f, *cmd, global)); });
}

}  // namespace kennel::cli
