#include "trainer_node/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/status_macros.h"
#include "core/ml/torch_errors.h"
#include "core/ml/weights.h"

namespace kennel::trainer {
namespace {

constexpr char kMagic[] = "KNLCKPT1";
constexpr size_t kHeader = 8 + 32 + 8;

std::string HexToBytes(const std::string& hex) {
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

}  // namespace

absl::StatusOr<std::string> SerializeCheckpoint(core::Classifier& model,
                                                torch::optim::Optimizer& optimizer,
                                                const TrainingPosition& position) {
  ASSIGN_OR_RETURN(std::string payload, core::CallTorch("writing checkpoint", [&] {
    torch::serialize::OutputArchive archive;
    // Model tensors by state_dict name, so a restore can check names and shapes.
    torch::serialize::OutputArchive model_archive;
    const core::StateDict state = core::GetStateDict(model);
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
    archive.write("epoch_partial",
                  torch::tensor({position.epoch_loss_sum, position.epoch_loss_count, position.epoch_images,
                                 position.epoch_seconds, position.elapsed_seconds},
                                torch::kFloat64));
    archive.write("rng", at::detail::getDefaultCPUGenerator().get_state());
    std::ostringstream out;
    archive.save_to(out);
    return out.str();
  }));
  std::string blob(kMagic, 8);
  blob += HexToBytes(core::Sha256Hex(payload));
  const uint64_t len = payload.size();
  blob.append(reinterpret_cast<const char*>(&len), 8);
  blob += payload;
  return blob;
}

absl::Status RestoreCheckpoint(const std::string& blob, core::Classifier& model,
                               torch::optim::Optimizer& optimizer, TrainingPosition* position) {
  if (blob.size() < kHeader || blob.compare(0, 8, kMagic) != 0) {
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
  torch::serialize::InputArchive archive;
  core::StateDict state;
  RETURN_IF_ERROR(core::CallTorch("reading checkpoint", [&] {
    std::istringstream in(payload);
    archive.load_from(in);
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    torch::Tensor count;
    model_archive.read("__count__", count);
    for (const auto& [name, tensor] : core::GetStateDict(model)) {
      torch::Tensor t;
      if (!model_archive.try_read(name, t)) continue;  // LoadStateDict reports it missing.
      state[name] = t;
    }
    if (count.item<int64_t>() != static_cast<int64_t>(state.size())) {
      state["(checkpoint holds " + std::to_string(count.item<int64_t>()) + " tensors)"] = count;
    }
  }, absl::StatusCode::kInvalidArgument));
  auto loaded = core::LoadStateDict(model, state);
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
    if (archive.try_read("epoch_partial", partial) && partial.numel() == 5) {
      partial = partial.to(torch::kFloat64).contiguous();
      const double* p = partial.data_ptr<double>();
      position->epoch_loss_sum = p[0];
      position->epoch_loss_count = p[1];
      position->epoch_images = p[2];
      position->epoch_seconds = p[3];
      position->elapsed_seconds = p[4];
    }
    torch::Tensor rng;
    archive.read("rng", rng);
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng);
  }, absl::StatusCode::kInvalidArgument);
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
