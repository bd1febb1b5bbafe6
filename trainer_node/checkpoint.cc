#include "trainer_node/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstring>
#include <filesystem>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/status_macros.h"
#include "core/ml/torch_errors.h"
#include "core/ml/weights.h"

namespace kennel::trainer {
namespace {

// Format 2 (written): the payload is safetensors, read by Kennel's own (fuzzed) parser.
// Format 1 (read only, written before 2026-12): a torch::serialize archive, read by
// LibTorch's TorchScript loader, which crashes on crafted input (fuzz/checkpoint_fuzzer found
// a SEGV in ScriptTypeParser); a checkpoint must still pass its checksum to get there.
constexpr char kMagic[] = "KNLCKPT2";
constexpr char kLegacyMagic[] = "KNLCKPT1";
constexpr size_t kHeader = 8 + 32 + 8;

std::string HexToBytes(const std::string& hex) {
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

std::string Seal(const char* magic, const std::string& payload) {
  std::string blob(magic, 8);
  blob += HexToBytes(core::Sha256Hex(payload));
  const uint64_t len = payload.size();
  blob.append(reinterpret_cast<const char*>(&len), 8);
  blob += payload;
  return blob;
}

// The optimizer's per-parameter state is keyed by the parameter's TensorImpl: as a string in
// LibTorch 1.x, as the pointer in 2.x.
#if TORCH_VERSION_MAJOR >= 2
void* StateKey(const torch::Tensor& p) { return p.unsafeGetTensorImpl(); }
#else
std::string StateKey(const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }
#endif

std::vector<torch::Tensor> Parameters(torch::optim::Optimizer& optimizer) {
  std::vector<torch::Tensor> out;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) out.push_back(p);
  }
  return out;
}

std::string OptimizerKey(size_t param, absl::string_view field) {
  return absl::StrCat("optimizer.", param, ".", field);
}

// The partial epoch's sums, as both formats store them: float64 [5].
torch::Tensor PartialEpoch(const TrainingPosition& p) {
  return torch::tensor({p.epoch_loss_sum, p.epoch_loss_count, p.epoch_images, p.epoch_seconds, p.elapsed_seconds},
                       torch::kFloat64);
}
void SetPartialEpoch(const torch::Tensor& partial, TrainingPosition* position) {
  const torch::Tensor t = partial.to(torch::kFloat64).contiguous();
  const double* p = t.data_ptr<double>();
  position->epoch_loss_sum = p[0];
  position->epoch_loss_count = p[1];
  position->epoch_images = p[2];
  position->epoch_seconds = p[3];
  position->elapsed_seconds = p[4];
}

// Restores torch's default CPU generator (throws c10::Error on a state of the wrong size).
void SetCpuRng(const torch::Tensor& state) {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

// The optimizer's state as named tensors (SGD's momentum buffers; AdamW's moments and step).
absl::Status SaveOptimizer(torch::optim::Optimizer& optimizer, core::StateDict& out) {
  const bool sgd = dynamic_cast<torch::optim::SGD*>(&optimizer) != nullptr;
  const bool adamw = dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
  if (!sgd && !adamw) return absl::InvalidArgumentError("checkpoints hold SGD or AdamW state only");
  auto& states = optimizer.state();
  const std::vector<torch::Tensor> params = Parameters(optimizer);
  for (size_t i = 0; i < params.size(); ++i) {
    auto it = states.find(StateKey(params[i]));
    if (it == states.end()) continue;  // No step taken for it yet.
    if (sgd) {
      const auto& state = static_cast<const torch::optim::SGDParamState&>(*it->second);
      if (state.momentum_buffer().defined()) out[OptimizerKey(i, "momentum_buffer")] = state.momentum_buffer();
    } else {
      const auto& state = static_cast<const torch::optim::AdamWParamState&>(*it->second);
      out[OptimizerKey(i, "step")] = torch::tensor(state.step(), torch::kInt64);
      out[OptimizerKey(i, "exp_avg")] = state.exp_avg();
      out[OptimizerKey(i, "exp_avg_sq")] = state.exp_avg_sq();
      if (state.max_exp_avg_sq().defined()) out[OptimizerKey(i, "max_exp_avg_sq")] = state.max_exp_avg_sq();
    }
  }
  return absl::OkStatus();
}

// Reads the optimizer state saved by SaveOptimizer and checks it against the optimizer's
// parameters; nothing is changed until Apply().
class OptimizerRestore {
 public:
  absl::Status Read(torch::optim::Optimizer& optimizer, const core::StateDict& saved) {
    optimizer_ = &optimizer;
    sgd_ = dynamic_cast<torch::optim::SGD*>(&optimizer) != nullptr;
    if (!sgd_ && dynamic_cast<torch::optim::AdamW*>(&optimizer) == nullptr) {
      return absl::InvalidArgumentError("checkpoints hold SGD or AdamW state only");
    }
    params_ = Parameters(optimizer);
    size_t used = 0;
    auto take = [&](size_t i, absl::string_view field, bool same_shape) -> absl::StatusOr<torch::Tensor> {
      auto it = saved.find(OptimizerKey(i, field));
      if (it == saved.end()) return torch::Tensor();
      ++used;
      const torch::Tensor& t = it->second;
      if (same_shape && (t.sizes() != params_[i].sizes() || !t.is_floating_point())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "checkpoint belongs to a different model: optimizer state ", it->first, " has shape ",
            c10::str(t.sizes()), ", the parameter ", c10::str(params_[i].sizes())));
      }
      if (!same_shape && (t.numel() != 1 || t.is_floating_point())) {
        return absl::InvalidArgumentError(absl::StrCat("checkpoint: ", it->first, " is not an integer"));
      }
      return t;
    };
    for (size_t i = 0; i < params_.size(); ++i) {
      if (sgd_) {
        ASSIGN_OR_RETURN(torch::Tensor momentum, take(i, "momentum_buffer", true));
        if (momentum.defined()) {
          auto state = std::make_unique<torch::optim::SGDParamState>();
          state->momentum_buffer(momentum.to(params_[i].options()));
          pending_.emplace_back(i, std::move(state));
        }
        continue;
      }
      ASSIGN_OR_RETURN(torch::Tensor step, take(i, "step", false));
      ASSIGN_OR_RETURN(torch::Tensor exp_avg, take(i, "exp_avg", true));
      ASSIGN_OR_RETURN(torch::Tensor exp_avg_sq, take(i, "exp_avg_sq", true));
      ASSIGN_OR_RETURN(torch::Tensor max_exp_avg_sq, take(i, "max_exp_avg_sq", true));
      if (!step.defined() && !exp_avg.defined() && !exp_avg_sq.defined()) continue;
      if (!step.defined() || !exp_avg.defined() || !exp_avg_sq.defined()) {
        return absl::InvalidArgumentError(absl::StrCat("checkpoint: AdamW state of parameter ", i, " is incomplete"));
      }
      auto state = std::make_unique<torch::optim::AdamWParamState>();
      state->step(step.to(torch::kInt64).item<int64_t>());
      state->exp_avg(exp_avg.to(params_[i].options()));
      state->exp_avg_sq(exp_avg_sq.to(params_[i].options()));
      if (max_exp_avg_sq.defined()) state->max_exp_avg_sq(max_exp_avg_sq.to(params_[i].options()));
      pending_.emplace_back(i, std::move(state));
    }
    size_t saved_entries = 0;
    for (const auto& [name, t] : saved) saved_entries += absl::StartsWith(name, "optimizer.") ? 1 : 0;
    if (used != saved_entries) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint belongs to a different model or optimizer: ", saved_entries - used,
          " optimizer entries fit no parameter"));
    }
    return absl::OkStatus();
  }

  void Apply() {
    auto& states = optimizer_->state();
    states.clear();
    for (auto& [i, state] : pending_) states[StateKey(params_[i])] = std::move(state);
  }

 private:
  torch::optim::Optimizer* optimizer_ = nullptr;
  bool sgd_ = false;
  std::vector<torch::Tensor> params_;
  std::vector<std::pair<size_t, std::unique_ptr<torch::optim::OptimizerParamState>>> pending_;
};

absl::StatusOr<torch::Tensor> Entry(const core::StateDict& saved, const std::string& name,
                                    torch::Dtype dtype, int64_t numel) {
  auto it = saved.find(name);
  if (it == saved.end() || it->second.scalar_type() != dtype || it->second.numel() != numel ||
      it->second.dim() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint has no valid '", name, "' entry"));
  }
  return it->second.contiguous();
}

absl::Status RestoreV2(const std::string& payload, CheckpointableModel& model, torch::optim::Optimizer& optimizer,
                       TrainingPosition* position) {
  auto parsed = core::ParseSafetensors(payload);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint is malformed: ", parsed.status().message()));
  }
  core::StateDict weights;
  for (const auto& [name, t] : *parsed) {
    if (absl::StartsWith(name, "model.")) weights[name.substr(6)] = t;
  }
  OptimizerRestore optimizer_state;
  RETURN_IF_ERROR(optimizer_state.Read(optimizer, *parsed));
  ASSIGN_OR_RETURN(torch::Tensor where, Entry(*parsed, "position", torch::kInt64, 5));
  ASSIGN_OR_RETURN(torch::Tensor partial, Entry(*parsed, "epoch_partial", torch::kFloat64, 5));
  const torch::Tensor current_rng = at::detail::getDefaultCPUGenerator().get_state();
  ASSIGN_OR_RETURN(torch::Tensor rng, Entry(*parsed, "rng", torch::kUInt8, current_rng.numel()));
  const int64_t* w = where.data_ptr<int64_t>();
  if (w[0] < 0 || w[1] < 0 || w[2] < 0 || w[3] < 0 || w[3] > (1 << 20) || w[4] < 0) {
    return absl::InvalidArgumentError("checkpoint holds a negative or impossible training position");
  }
  // Everything checked: apply. (LoadState checks names and shapes before it copies.)
  auto loaded = model.LoadState(weights);
  if (!loaded.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint belongs to a different model: ", loaded.message()));
  }
  optimizer_state.Apply();
  position->epoch = w[0];
  position->step_in_epoch = w[1];
  position->global_step = w[2];
  position->world_size = static_cast<int32_t>(w[3]);
  position->stage_start = w[4];
  SetPartialEpoch(partial, position);
  return core::CallTorch("restoring the random generator", [&] { SetCpuRng(rng); },
                         absl::StatusCode::kInvalidArgument);
}

// Format 1, as Kennel wrote it before 2026-12.
absl::Status RestoreV1(const std::string& payload, CheckpointableModel& model, torch::optim::Optimizer& optimizer,
                       TrainingPosition* position) {
  torch::serialize::InputArchive archive;
  core::StateDict state;
  RETURN_IF_ERROR(core::CallTorch("reading checkpoint", [&] {
    std::istringstream in(payload);
    archive.load_from(in);
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    torch::Tensor count;
    model_archive.read("__count__", count);
    for (const auto& [name, tensor] : model.State()) {
      torch::Tensor t;
      if (!model_archive.try_read(name, t)) continue;  // LoadState reports it missing.
      state[name] = t;
    }
    if (count.item<int64_t>() != static_cast<int64_t>(state.size())) {
      state["(checkpoint holds " + std::to_string(count.item<int64_t>()) + " tensors)"] = count;
    }
  }, absl::StatusCode::kInvalidArgument));
  auto loaded = model.LoadState(state);
  if (!loaded.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint belongs to a different model: ", loaded.message()));
  }
  return core::CallTorch("restoring checkpoint", [&] {
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer.load(optimizer_archive);
    // Each read gets a fresh tensor: reading into a defined one would set_() its storage.
    auto read_int = [&](const char* key) {
      torch::Tensor t;
      archive.read(key, t);
      return t.item<int64_t>();
    };
    position->epoch = read_int("epoch");
    position->step_in_epoch = read_int("step_in_epoch");
    position->global_step = read_int("global_step");
    torch::Tensor group;
    if (archive.try_read("group", group) && group.numel() == 2) {
      group = group.to(torch::kInt64).contiguous();
      position->world_size = static_cast<int32_t>(group.data_ptr<int64_t>()[0]);
      position->stage_start = group.data_ptr<int64_t>()[1];
    }
    // Checkpoints written before the partial epoch was recorded restore as "nothing yet".
    torch::Tensor partial;
    if (archive.try_read("epoch_partial", partial) && partial.numel() == 5) SetPartialEpoch(partial, position);
    torch::Tensor rng;
    archive.read("rng", rng);
    SetCpuRng(rng);
  }, absl::StatusCode::kInvalidArgument);
}

}  // namespace

absl::StatusOr<std::string> SerializeCheckpoint(const CheckpointableModel& model,
                                                torch::optim::Optimizer& optimizer,
                                                const TrainingPosition& position) {
  core::StateDict entries;
  // (SerializeSafetensors brings every tensor to the CPU, contiguous.)
  for (const auto& [name, tensor] : model.State()) entries["model." + name] = tensor;
  RETURN_IF_ERROR(SaveOptimizer(optimizer, entries));
  entries["position"] = torch::tensor({position.epoch, position.step_in_epoch, position.global_step,
                                       static_cast<int64_t>(position.world_size), position.stage_start},
                                      torch::kInt64);
  entries["epoch_partial"] = PartialEpoch(position);
  entries["rng"] = at::detail::getDefaultCPUGenerator().get_state();
  ASSIGN_OR_RETURN(std::string payload, core::SerializeSafetensors(entries));
  return SealCheckpoint(payload);
}

std::string SealCheckpoint(const std::string& payload) { return Seal(kMagic, payload); }

absl::StatusOr<std::string> SerializeLegacyCheckpoint(const CheckpointableModel& model,
                                                      torch::optim::Optimizer& optimizer,
                                                      const TrainingPosition& position) {
  ASSIGN_OR_RETURN(std::string payload, core::CallTorch("writing checkpoint", [&] {
    torch::serialize::OutputArchive archive;
    // Model tensors by state_dict name, so a restore can check names and shapes.
    torch::serialize::OutputArchive model_archive;
    const core::StateDict state = model.State();
    for (const auto& [name, tensor] : state) model_archive.write(name, tensor);
    model_archive.write("__count__", torch::tensor(static_cast<int64_t>(state.size())));
    archive.write("model", model_archive);
    torch::serialize::OutputArchive optimizer_archive;
    optimizer.save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
    archive.write("epoch", torch::tensor(position.epoch, torch::kInt64));
    archive.write("step_in_epoch", torch::tensor(position.step_in_epoch, torch::kInt64));
    archive.write("global_step", torch::tensor(position.global_step, torch::kInt64));
    archive.write("group", torch::tensor({static_cast<int64_t>(position.world_size), position.stage_start},
                                         torch::kInt64));
    archive.write("epoch_partial", PartialEpoch(position));
    archive.write("rng", at::detail::getDefaultCPUGenerator().get_state());
    std::ostringstream out;
    archive.save_to(out);
    return out.str();
  }));
  return Seal(kLegacyMagic, payload);
}

absl::Status RestoreCheckpoint(const std::string& blob, CheckpointableModel& model,
                               torch::optim::Optimizer& optimizer, TrainingPosition* position) {
  const bool legacy = blob.size() >= 8 && blob.compare(0, 8, kLegacyMagic) == 0;
  if (blob.size() < kHeader || (!legacy && blob.compare(0, 8, kMagic) != 0)) {
    return absl::DataLossError("not a Kennel checkpoint (bad header)");
  }
  uint64_t len = 0;
  std::memcpy(&len, blob.data() + 40, 8);
  if (blob.size() - kHeader != len) {
    return absl::DataLossError(absl::StrCat("checkpoint is truncated: ", blob.size() - kHeader,
                                            " of ", len, " payload bytes"));
  }
  const std::string payload = blob.substr(kHeader);
  if (HexToBytes(core::Sha256Hex(payload)) != blob.substr(8, 32)) {
    return absl::DataLossError("checkpoint is corrupt: checksum mismatch");
  }
  return legacy ? RestoreV1(payload, model, optimizer, position)
                : RestoreV2(payload, model, optimizer, position);
}

// A built-in model's checkpoints, as the tests and the fuzzer hold them (not owned).
namespace {
BuiltinModel View(core::Classifier& model) {
  return BuiltinModel(std::shared_ptr<core::Classifier>(std::shared_ptr<void>(), &model));
}
}  // namespace

absl::StatusOr<std::string> SerializeCheckpoint(core::Classifier& model, torch::optim::Optimizer& optimizer,
                                                const TrainingPosition& position) {
  return SerializeCheckpoint(View(model), optimizer, position);
}

absl::Status RestoreCheckpoint(const std::string& blob, core::Classifier& model, torch::optim::Optimizer& optimizer,
                               TrainingPosition* position) {
  BuiltinModel view = View(model);
  return RestoreCheckpoint(blob, view, optimizer, position);
}

absl::Status LocalCheckpointStore::Save(const std::string& blob, const TrainingPosition&) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  return core::WriteFileAtomic(dir_ + "/checkpoint.bin", blob);
}

absl::StatusOr<std::optional<std::string>> LocalCheckpointStore::LoadLatest() {
  auto blob = core::ReadFile(dir_ + "/checkpoint.bin");
  if (absl::IsNotFound(blob.status())) return std::optional<std::string>();
  if (!blob.ok()) return blob.status();
  return std::optional<std::string>(*std::move(blob));
}

}  // namespace kennel::trainer
