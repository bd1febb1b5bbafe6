#include "coordinator/artifact_store.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/ml/artifact.h"
#include "core/files.h"
#include "core/status_macros.h"

namespace kennel::coordinator {
namespace fs = std::filesystem;

namespace {
constexpr char kCheckpointFile[] = "checkpoint.bin";

bool ValidName(const std::string& s) {
  if (s.empty() || s.size() > 128 || s == "." || s == "..") return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}
}  // namespace

absl::StatusOr<std::unique_ptr<ArtifactStore>> ArtifactStore::Create(std::string root,
                                                                      StateStore* state) {
  std::error_code ec;
  for (const char* sub : {"models", "checkpoints", "staging"}) {
    fs::create_directories(fs::path(root) / sub, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", root, "/", sub, ": ", ec.message()));
  }
  fs::remove_all(fs::path(root) / "staging", ec);  // Uploads interrupted by a restart.
  fs::create_directories(fs::path(root) / "staging", ec);
  return std::unique_ptr<ArtifactStore>(new ArtifactStore(std::move(root), state));
}

std::unique_ptr<core::FolderReceiver> ArtifactStore::NewReceiver(int64_t max_bytes) {
  static std::atomic<uint64_t> counter{0};
  const std::string dir = absl::StrCat(root_, "/staging/", ::getpid(), "-", counter++, "-",
                                       std::random_device()());
  return std::make_unique<core::FolderReceiver>(dir, max_bytes);
}

void ArtifactStore::Discard(const std::string& staging_dir) {
  std::error_code ec;
  fs::remove_all(staging_dir, ec);
}

absl::StatusOr<v1::ModelVersion> ArtifactStore::Register(const std::string& staging_dir,
                                                        v1::ModelManifest manifest, const std::string& job_id) {
  ASSIGN_OR_RETURN(int64_t version, state_->NextModelVersion(manifest.name()));
  manifest.set_version(version);
  RETURN_IF_ERROR(core::WriteFileAtomic(staging_dir + "/" + core::kManifestFile, core::ManifestToJson(manifest)));
  const fs::path target = fs::path(root_) / "models" / manifest.name() / std::to_string(version);
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  if (::rename(staging_dir.c_str(), target.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename to ", target.string(), ": ", std::strerror(errno)));
  }
  RETURN_IF_ERROR(core::SyncDirectory(target.parent_path().string()));
  v1::ModelVersion model;
  model.set_name(manifest.name());
  model.set_version(version);
  *model.mutable_manifest() = std::move(manifest);
  model.set_job_id(job_id);
  model.set_created_unix_ms(absl::ToUnixMillis(absl::Now()));
  RETURN_IF_ERROR(state_->SaveModel(model));
  return model;
}

absl::StatusOr<v1::ModelVersion> ArtifactStore::CommitModel(const std::string& staging_dir,
                                                           const std::string& job_id) {
  auto commit = [&]() -> absl::StatusOr<v1::ModelVersion> {
    ASSIGN_OR_RETURN(core::LoadedModel loaded, core::LoadArtifact(staging_dir));
    v1::ModelManifest manifest = loaded.manifest;
    if (!ValidName(manifest.name())) {
      return absl::InvalidArgumentError(absl::StrCat("bad model name '", manifest.name(), "'"));
    }
    manifest.mutable_lineage()->set_job_id(job_id);
    return Register(staging_dir, std::move(manifest), job_id);
  };
  auto result = commit();
  Discard(staging_dir);
  return result;
}

absl::StatusOr<v1::ModelVersion> ArtifactStore::PublishModel(const std::string& source_name,
                                                            int64_t source_version, const std::string& name,
                                                            const v1::Lineage& lineage,
                                                            const std::string& job_id) {
  if (!ValidName(name)) return absl::InvalidArgumentError(absl::StrCat("bad model name '", name, "'"));
  v1::ArtifactRef ref;
  ref.set_kind(v1::ArtifactRef::MODEL);
  ref.set_name(source_name);
  ref.set_version(source_version);
  ASSIGN_OR_RETURN(auto source, Resolve(ref));
  ASSIGN_OR_RETURN(v1::ModelManifest manifest, core::ReadManifest(source.first));
  auto staging = NewReceiver(0);
  const std::string dir = staging->dir();
  auto publish = [&]() -> absl::StatusOr<v1::ModelVersion> {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("creating ", dir, ": ", ec.message()));
    const std::string weights = manifest.weights_file().empty() ? core::kWeightsFile : manifest.weights_file();
    fs::create_hard_link(fs::path(source.first) / weights, fs::path(dir) / weights, ec);
    if (ec) {
      ec.clear();
      fs::copy_file(fs::path(source.first) / weights, fs::path(dir) / weights, ec);
      if (ec) return absl::InternalError(absl::StrCat("copying ", source.first, "/", weights, ": ", ec.message()));
    }
    manifest.set_name(name);
    auto* l = manifest.mutable_lineage();
    l->set_tuning_id(lineage.tuning_id());
    l->set_trial(lineage.trial());
    *l->mutable_hyperparameters() = lineage.hyperparameters();
    l->set_source_model(absl::StrCat(source_name, ":", source_version));
    return Register(dir, std::move(manifest), job_id);
  };
  auto result = publish();
  Discard(dir);
  return result;
}

absl::Status ArtifactStore::CommitCheckpoint(const std::string& staging_dir, const std::string& job_id) {
  auto commit = [&]() -> absl::Status {
    if (!ValidName(job_id)) return absl::InvalidArgumentError("bad job id");
    const fs::path source = fs::path(staging_dir) / kCheckpointFile;
    if (!fs::exists(source)) return absl::InvalidArgumentError("a checkpoint upload holds checkpoint.bin");
    const fs::path dir = fs::path(root_) / "checkpoints" / job_id;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (::rename(source.c_str(), (dir / kCheckpointFile).c_str()) != 0) {
      return absl::InternalError(absl::StrCat("rename checkpoint: ", std::strerror(errno)));
    }
    return core::SyncDirectory(dir.string());
  };
  absl::Status s = commit();
  Discard(staging_dir);
  return s;
}

absl::StatusOr<int64_t> ArtifactStore::DeleteCheckpoint(const std::string& job_id) {
  if (!ValidName(job_id)) return absl::InvalidArgumentError("bad job id");
  const fs::path dir = fs::path(root_) / "checkpoints" / job_id;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return 0;
  const auto size = fs::file_size(dir / kCheckpointFile, ec);  // The folder holds just this file.
  const int64_t bytes = ec ? 0 : static_cast<int64_t>(size);
  fs::remove_all(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("removing ", dir.string(), ": ", ec.message()));
  return bytes;
}

bool ArtifactStore::HasCheckpoint(const std::string& job_id) const {
  std::error_code ec;
  return ValidName(job_id) && fs::exists(fs::path(root_) / "checkpoints" / job_id / kCheckpointFile, ec);
}

absl::StatusOr<std::pair<std::string, std::vector<std::string>>> ArtifactStore::Resolve(
    const v1::ArtifactRef& ref) {
  if (ref.kind() == v1::ArtifactRef::CHECKPOINT) {
    if (!HasCheckpoint(ref.job_id())) {
      return absl::NotFoundError(absl::StrCat("job ", ref.job_id(), " has no checkpoint"));
    }
    return std::make_pair((fs::path(root_) / "checkpoints" / ref.job_id()).string(),
                          std::vector<std::string>{kCheckpointFile});
  }
  if (ref.kind() != v1::ArtifactRef::MODEL || !ValidName(ref.name())) {
    return absl::InvalidArgumentError("artifact reference needs a model name or a job id");
  }
  int64_t version = ref.version();
  if (version <= 0) {
    ASSIGN_OR_RETURN(auto models, state_->LoadModels(ref.name()));
    if (models.empty()) return absl::NotFoundError(absl::StrCat("no model named ", ref.name()));
    version = models.back().version();
  }
  const fs::path dir = fs::path(root_) / "models" / ref.name() / std::to_string(version);
  std::error_code ec;
  if (!fs::exists(dir / core::kManifestFile, ec)) {
    return absl::NotFoundError(absl::StrCat("no model ", ref.name(), " version ", version));
  }
  // The weights file the manifest names (a TorchScript model's archive is model.pt).
  ASSIGN_OR_RETURN(v1::ModelManifest manifest, core::ReadManifest(dir.string()));
  return std::make_pair(dir.string(), std::vector<std::string>{core::kManifestFile, manifest.weights_file()});
}

}  // namespace kennel::coordinator
