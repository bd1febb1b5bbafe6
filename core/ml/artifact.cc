#include "core/ml/artifact.h"

#include <torch/script.h>

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include "absl/strings/str_cat.h"
#include "core/file_type.h"
#include "core/files.h"
#include "core/ml/aoti_model.h"
#include "core/ml/image.h"
#include "core/ml/scripted_model.h"
#include "core/status_macros.h"
#include "core/ml/weights.h"
#include "core/model_spec.h"

namespace kennel::core {
namespace fs = std::filesystem;

std::string ManifestToJson(const kennel::v1::ModelManifest& manifest) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  std::string json;
  // Serialising a valid message cannot fail.
  (void)google::protobuf::util::MessageToJsonString(manifest, &json, options);
  return json;
}

absl::StatusOr<kennel::v1::ModelManifest> ValidateManifest(kennel::v1::ModelManifest manifest) {
  ASSIGN_OR_RETURN(*manifest.mutable_model(), NormalizeModelSpec(manifest.model()));
  ASSIGN_OR_RETURN(*manifest.mutable_preprocess(), NormalizePreprocessSpec(manifest.preprocess()));
  if (manifest.class_names_size() != manifest.model().num_classes()) {
    return absl::InvalidArgumentError(absl::StrCat("manifest lists ", manifest.class_names_size(),
                                                   " class names for a model with ",
                                                   manifest.model().num_classes(), " classes"));
  }
  if (manifest.preprocess().channels() != manifest.model().in_channels()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "preprocessing produces ", manifest.preprocess().channels(),
        " channels but the model takes ", manifest.model().in_channels()));
  }
  return manifest;
}

namespace {

// The artifact folder `dir` with `weights` as `file` and the manifest, written atomically.
absl::Status WriteArtifactFiles(const std::string& dir, kennel::v1::ModelManifest manifest,
                                const std::string& weights, const char* file) {
  std::error_code ec;
  manifest.set_weights_file(file);
  manifest.set_weights_sha256(Sha256Hex(weights));
  manifest.set_weights_bytes(static_cast<int64_t>(weights.size()));

  const fs::path target(dir);
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  const fs::path staging =
      parent / absl::StrCat(".", target.filename().string(), ".staging-", ::getpid(), "-",
                            std::random_device()());
  if (!fs::create_directory(staging, ec)) {
    return absl::InternalError(absl::StrCat("cannot create ", staging.string(), ": ", ec.message()));
  }
  absl::Status status = WriteFileSynced((staging / file).string(), weights);
  if (status.ok()) status = WriteFileSynced((staging / kManifestFile).string(), ManifestToJson(manifest));
  if (status.ok()) status = SyncDirectory(staging.string());
  if (status.ok() && ::rename(staging.c_str(), target.c_str()) != 0) {
    status = errno == EEXIST || errno == ENOTEMPTY
                 ? absl::AlreadyExistsError(absl::StrCat("artifact folder ", dir, " already exists"))
                 : absl::InternalError(absl::StrCat("rename to ", dir, ": ", std::strerror(errno)));
  }
  if (!status.ok()) {
    fs::remove_all(staging, ec);
    return status;
  }
  return SyncDirectory(parent.string());
}

absl::Status CheckNewFolder(const std::string& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec)) return absl::AlreadyExistsError(absl::StrCat("artifact folder ", dir, " already exists"));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteArtifact(const std::string& dir, kennel::v1::ModelManifest manifest, const Classifier& model) {
  RETURN_IF_ERROR(CheckNewFolder(dir));
  manifest.set_format_version(kArtifactFormatVersion);
  ASSIGN_OR_RETURN(manifest, ValidateManifest(std::move(manifest)));
  if (IsUserCode(manifest.model().architecture())) {
    return absl::InvalidArgumentError("a TORCHSCRIPT or AOTINDUCTOR manifest is written with its module or package");
  }
  ASSIGN_OR_RETURN(std::string weights, SerializeSafetensors(GetStateDict(model)));
  return WriteArtifactFiles(dir, std::move(manifest), weights, kWeightsFile);
}

namespace {

// A user-code artifact (TorchScript module, AOTInductor package) as `file`: `manifest` must be
// valid and of architecture `arch` (else INVALID_ARGUMENT `refusal`); `file_bytes` makes the
// file's bytes once it is.
absl::Status WriteCodeArtifact(const std::string& dir, kennel::v1::ModelManifest manifest,
                               kennel::v1::Architecture arch, absl::string_view refusal,
                               const std::function<absl::StatusOr<std::string>()>& file_bytes,
                               const char* file) {
  RETURN_IF_ERROR(CheckNewFolder(dir));
  manifest.set_format_version(kArtifactFormatVersion);
  ASSIGN_OR_RETURN(manifest, ValidateManifest(std::move(manifest)));
  if (manifest.model().architecture() != arch) return absl::InvalidArgumentError(refusal);
  ASSIGN_OR_RETURN(std::string bytes, file_bytes());
  return WriteArtifactFiles(dir, std::move(manifest), bytes, file);
}

}  // namespace

absl::Status WriteScriptArtifact(const std::string& dir, kennel::v1::ModelManifest manifest,
                                 torch::jit::Module& module) {
  return WriteCodeArtifact(dir, std::move(manifest), kennel::v1::TORCHSCRIPT,
                           "only a TORCHSCRIPT manifest is written with a module",
                           [&] { return SaveTorchScript(module); }, kScriptFile);
}

absl::Status WritePackageArtifact(const std::string& dir, kennel::v1::ModelManifest manifest,
                                  absl::string_view package) {
  return WriteCodeArtifact(dir, std::move(manifest), kennel::v1::AOTINDUCTOR,
                           "only an AOTINDUCTOR manifest is written with a package",
                           [&]() -> absl::StatusOr<std::string> { return std::string(package); }, kAotiFile);
}

absl::StatusOr<kennel::v1::ModelManifest> ReadManifest(const std::string& dir) {
  auto json = ReadFile((fs::path(dir) / kManifestFile).string(), 16 << 20);
  if (!json.ok()) {
    if (absl::IsNotFound(json.status())) {
      return absl::NotFoundError(absl::StrCat("no model artifact at ", dir, " (", kManifestFile,
                                              " missing)"));
    }
    return json.status();
  }
  return ParseManifest(*json, dir);
}

absl::StatusOr<kennel::v1::ModelManifest> ParseManifest(absl::string_view json, absl::string_view dir) {
  kennel::v1::ModelManifest manifest;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &manifest, options);
  if (!parsed.ok()) {
    return absl::DataLossError(absl::StrCat(dir, "/", kManifestFile, " is corrupt: ",
                                            parsed.message().as_string()));
  }
  if (manifest.format_version() != kArtifactFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": artifact format version ",
                                                   manifest.format_version(), ", this Kennel reads ",
                                                   kArtifactFormatVersion));
  }
  const std::string& file = manifest.weights_file();
  if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
    return absl::DataLossError(absl::StrCat(dir, ": manifest names no valid weights file"));
  }
  auto valid = ValidateManifest(std::move(manifest));
  if (!valid.ok()) {
    return absl::Status(valid.status().code(), absl::StrCat(dir, ": ", valid.status().message()));
  }
  return valid;
}

absl::StatusOr<LoadedModel> LoadArtifact(const std::string& dir) {
  LoadedModel out;
  ASSIGN_OR_RETURN(out.manifest, ReadManifest(dir));
  const std::string path = (fs::path(dir) / out.manifest.weights_file()).string();
  ASSIGN_OR_RETURN(std::string weights, ReadFile(path, int64_t{1} << 36));
  if (static_cast<int64_t>(weights.size()) != out.manifest.weights_bytes()) {
    return absl::DataLossError(absl::StrCat(path, " is ", weights.size(), " bytes, the manifest says ",
                                            out.manifest.weights_bytes(), " (truncated or replaced)"));
  }
  if (Sha256Hex(weights) != out.manifest.weights_sha256()) {
    return absl::DataLossError(absl::StrCat(path, " does not match the manifest's SHA-256 (corrupt)"));
  }
  if (out.manifest.model().architecture() == kennel::v1::TORCHSCRIPT) {
    auto script = LoadTorchScript(weights, path);
    if (!script.ok()) return absl::DataLossError(script.status().message());
    out.script = *std::move(script);
    return out;
  }
  if (out.manifest.model().architecture() == kennel::v1::AOTINDUCTOR) {
    weights.clear();
    ASSIGN_OR_RETURN(out.aoti, AotiModel::Load(path));
    return out;
  }
  if (const FileType type = DetectFileType(absl::string_view(weights).substr(0, kFileTypeProbeBytes));
      type != FileType::kSafetensors) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is ", DescribeFileType(type), "; an artifact's weights must be safetensors (",
        "`kennelctl import` turns a torch.save state_dict into an artifact)"));
  }
  ASSIGN_OR_RETURN(StateDict state, ParseSafetensors(weights));
  ASSIGN_OR_RETURN(out.model, CreateModel(out.manifest.model()));
  auto loaded = LoadStateDict(*out.model, state);
  if (!loaded.ok()) return absl::DataLossError(absl::StrCat(dir, ": ", loaded.message()));
  out.model->eval();
  return out;
}

}  // namespace kennel::core
