#include "core/job_spec.h"

#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "core/model_spec.h"
#include "core/status_macros.h"

namespace kennel::core {
namespace {

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("job spec: ", field, " ", why));
}

}  // namespace

absl::StatusOr<kennel::v1::JobSpec> NormalizeJobSpec(kennel::v1::JobSpec spec) {
  if (spec.name().empty()) return Bad("name", "is required (the model is registered under it)");
  if (absl::Status s = ValidateModelName(spec.name()); !s.ok()) return Bad("name:", s.message());
  if (!spec.has_world_size()) spec.set_world_size(1);
  if (spec.world_size() < 1 || spec.world_size() > 1024) return Bad("world_size", "must be in [1, 1024]");
  if (!spec.has_min_world_size()) spec.set_min_world_size(spec.world_size());
  if (spec.min_world_size() < 1 || spec.min_world_size() > spec.world_size()) {
    return Bad("min_world_size", "must be in [1, world_size]");
  }
  if (spec.backend().empty()) spec.set_backend("gloo");
  if (spec.backend() != "gloo" && spec.backend() != "nccl") {
    return Bad("backend", absl::StrCat("must be gloo or nccl, not '", spec.backend(), "'"));
  }
  auto model = NormalizeModelSpec(spec.model());
  if (!model.ok()) return Bad("model:", model.status().message());
  *spec.mutable_model() = *model;
  if (spec.preprocess().channels() == 0) spec.mutable_preprocess()->set_channels(model->in_channels());
  auto preprocess = NormalizePreprocessSpec(spec.preprocess());
  if (!preprocess.ok()) return Bad("preprocess:", preprocess.status().message());
  *spec.mutable_preprocess() = *preprocess;
  if (preprocess->channels() != model->in_channels()) {
    return Bad("preprocess.channels", "must equal model.in_channels");
  }
  if (model->architecture() == kennel::v1::SMALL_CNN &&
      (preprocess->height() != 28 || preprocess->width() != 28)) {
    return Bad("preprocess", "must be 28x28 for the small CNN");
  }

  auto& data = *spec.mutable_dataset();
  if (data.format() == kennel::v1::DatasetIndex::FORMAT_UNSPECIFIED) {
    return Bad("dataset.format", "is required (IDX or IMAGE_FOLDER)");
  }
  if (data.root().empty()) return Bad("dataset.root", "is required");
  if (data.train_split().empty()) data.set_train_split("train");
  if (data.eval_split().empty()) {
    data.set_eval_split(data.format() == kennel::v1::DatasetIndex::IDX ? "test" : "valid");
  }
  if (data.max_train_samples() < 0 || data.max_eval_samples() < 0) {
    return Bad("dataset.max_*_samples", "must not be negative");
  }

  auto& t = *spec.mutable_training();
  // Unset fields get their defaults; set ones are checked as given (0 is never "unset").
  if (!t.has_epochs()) t.set_epochs(1);
  if (t.epochs() < 1 || t.epochs() > 10000) return Bad("training.epochs", "must be in [1, 10000]");
  if (!t.has_batch_size()) t.set_batch_size(64);
  if (t.batch_size() < 1 || t.batch_size() > 65536) {
    return Bad("training.batch_size", "must be in [1, 65536]");
  }
  if (t.optimizer() == kennel::v1::OPTIMIZER_UNSPECIFIED) t.set_optimizer(kennel::v1::SGD);
  if (!kennel::v1::Optimizer_IsValid(t.optimizer())) return Bad("training.optimizer", "is not SGD or ADAMW");
  if (!kennel::v1::GradientCompression_IsValid(t.gradient_compression())) {
    return Bad("training.gradient_compression", "is not FP16, BF16, POWERSGD or unset");
  }
  if (!t.has_powersgd_rank()) t.set_powersgd_rank(4);
  if (t.powersgd_rank() < 1 || t.powersgd_rank() > 64) return Bad("training.powersgd_rank", "must be in [1, 64]");
  if (!t.has_powersgd_warmup_steps()) t.set_powersgd_warmup_steps(100);
  if (t.powersgd_warmup_steps() < 0) return Bad("training.powersgd_warmup_steps", "must not be negative");
  if (!t.has_learning_rate()) t.set_learning_rate(t.optimizer() == kennel::v1::ADAMW ? 1e-3 : 0.01);
  if (!(t.learning_rate() > 0 && t.learning_rate() < 100)) {
    return Bad("training.learning_rate", "must be in (0, 100)");
  }
  if (!t.has_momentum()) t.set_momentum(t.optimizer() == kennel::v1::SGD ? 0.9 : 0.0);
  if (!(t.momentum() >= 0 && t.momentum() < 1)) return Bad("training.momentum", "must be in [0, 1)");
  if (!t.has_weight_decay()) t.set_weight_decay(0);
  if (!(t.weight_decay() >= 0 && std::isfinite(t.weight_decay()))) {
    return Bad("training.weight_decay", "must be finite and not negative");
  }
  if (t.schedule() == kennel::v1::LR_SCHEDULE_UNSPECIFIED) t.set_schedule(kennel::v1::CONSTANT);
  if (!kennel::v1::LrSchedule_IsValid(t.schedule())) return Bad("training.schedule", "is not CONSTANT, STEP or COSINE");
  if (!t.has_step_epochs()) t.set_step_epochs(1);
  if (!t.has_step_gamma()) t.set_step_gamma(0.1);
  if (t.step_epochs() < 1 || !(t.step_gamma() > 0 && t.step_gamma() <= 1)) {
    return Bad("training.step_*", "needs step_epochs >= 1 and step_gamma in (0, 1]");
  }
  if (!t.has_warmup_steps()) t.set_warmup_steps(0);
  if (t.warmup_steps() < 0) return Bad("training.warmup_steps", "must not be negative");
  if (!t.has_checkpoint_every_steps()) t.set_checkpoint_every_steps(0);
  if (t.checkpoint_every_steps() < 0) return Bad("training.checkpoint_every_steps", "must not be negative");
  if (!t.has_checkpoint_interval_s()) t.set_checkpoint_interval_s(kDefaultCheckpointIntervalS);
  if (t.checkpoint_interval_s() < 0) return Bad("training.checkpoint_interval_s", "must not be negative (0: off)");
  if (!t.has_data_workers()) t.set_data_workers(2);
  if (t.data_workers() < 1 || t.data_workers() > 256) return Bad("training.data_workers", "must be in [1, 256]");
  if (!t.has_torch_threads()) t.set_torch_threads(1);
  if (t.torch_threads() < 1 || t.torch_threads() > 256) return Bad("training.torch_threads", "must be in [1, 256]");
  if (!t.has_collective_timeout_s()) t.set_collective_timeout_s(60);
  if (t.collective_timeout_s() < 1) return Bad("training.collective_timeout_s", "must be at least 1");
  if (!t.has_bucket_cap_bytes()) t.set_bucket_cap_bytes(kDefaultBucketCapBytes);
  if (t.bucket_cap_bytes() < 1024) return Bad("training.bucket_cap_bytes", "must be at least 1024");
  if (t.mixed_precision() && spec.backend() != "nccl") {
    return Bad("training.mixed_precision", "needs GPU trainers (backend nccl)");
  }
  if (spec.model().architecture() == kennel::v1::AOTINDUCTOR) {
    return Bad("model.architecture", "is AOTINDUCTOR: a compiled package is served, not trained (train the model as "
                                     "TorchScript with --model-file, or a built-in architecture)");
  }
  const bool scripted = spec.model().architecture() == kennel::v1::TORCHSCRIPT;
  if (scripted != !t.model_file().empty()) {
    return Bad("training.model_file", scripted ? "is required for a TORCHSCRIPT model (the module to train)"
                                               : "is a TorchScript module: model.architecture must be TORCHSCRIPT");
  }
  // A module usually comes with its weights, so a frozen backbone needs no init_weights there.
  if (t.freeze_backbone() && t.init_weights().empty() && !scripted) {
    return Bad("training.freeze_backbone", "needs init_weights (a frozen random backbone learns nothing)");
  }
  return spec;
}

double LearningRateAt(const kennel::v1::TrainingSpec& t, int64_t global_step,
                      int64_t steps_per_epoch) {
  double lr = t.learning_rate();
  const int64_t total = std::max<int64_t>(1, steps_per_epoch * t.epochs());
  switch (t.schedule()) {
    case kennel::v1::STEP: {
      const int64_t epoch = steps_per_epoch > 0 ? global_step / steps_per_epoch : 0;
      lr *= std::pow(t.step_gamma(), static_cast<double>(epoch / t.step_epochs()));
      break;
    }
    case kennel::v1::COSINE: {
      const int64_t warm = t.warmup_steps();
      const double progress = std::clamp(
          static_cast<double>(global_step - warm) / std::max<int64_t>(1, total - warm), 0.0, 1.0);
      lr *= 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
      break;
    }
    default:
      break;
  }
  if (global_step < t.warmup_steps()) {
    lr *= static_cast<double>(global_step + 1) / (t.warmup_steps() + 1);
  }
  return lr;
}

}  // namespace kennel::core
