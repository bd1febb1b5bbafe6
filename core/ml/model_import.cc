#include "core/ml/model_import.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/files.h"
#include "core/ml/aoti_model.h"
#include "core/ml/artifact.h"
#include "core/ml/models.h"
#include "core/ml/scripted_model.h"
#include "core/ml/torch_errors.h"
#include "core/ml/weights.h"
#include "core/model_spec.h"
#include "core/status_macros.h"

namespace kennel::core {
namespace {
namespace fs = std::filesystem;

absl::Status CheckClassNames(const std::vector<std::string>& names) {
  if (names.empty()) return absl::InvalidArgumentError("class names are required (one per output of the head)");
  std::set<std::string> seen;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) return absl::InvalidArgumentError(absl::StrCat("class name ", i, " is empty"));
    if (!seen.insert(names[i]).second) {
      return absl::InvalidArgumentError(absl::StrCat("class name '", names[i], "' appears twice"));
    }
  }
  return absl::OkStatus();
}

// What the file's head looks like, when it disagrees with the options: the likeliest user
// mistakes (a wrong class count, the wrong head kind) get a sentence of their own.
std::string HeadHint(const StateDict& weights, const kennel::v1::ModelSpec& spec) {
  auto find = [&](const char* name) -> const torch::Tensor* {
    auto it = weights.find(name);
    return it == weights.end() ? nullptr : &it->second;
  };
  const torch::Tensor* linear = find("fc.weight");
  const torch::Tensor* mlp_out = find("fc.2.weight");
  if (spec.head() == kennel::v1::LINEAR && linear == nullptr && mlp_out != nullptr) {
    return "the file has an MLP head (fc.0 and fc.2): import with --head mlp. ";
  }
  if (spec.head() == kennel::v1::MLP && mlp_out == nullptr && linear != nullptr) {
    return "the file has a single Linear head (fc.weight): import with --head linear. ";
  }
  const torch::Tensor* out = spec.head() == kennel::v1::MLP ? mlp_out : linear;
  if (out != nullptr && out->dim() == 2 && out->size(0) != spec.num_classes()) {
    return absl::StrCat("the file's head has ", out->size(0), " outputs but ", spec.num_classes(),
                        " class names were given. ");
  }
  if (spec.head() == kennel::v1::MLP && find("fc.0.weight") != nullptr && find("fc.0.weight")->dim() == 2 &&
      find("fc.0.weight")->size(0) != spec.head_hidden()) {
    return absl::StrCat("the file's MLP head has ", find("fc.0.weight")->size(0),
                        " hidden units: import with --head-hidden ", find("fc.0.weight")->size(0), ". ");
  }
  return "";
}

// Names of floating-point tensors holding NaN or infinity.
absl::StatusOr<std::vector<std::string>> NonFinite(const StateDict& weights) {
  return CallTorch("checking values", [&] {
    std::vector<std::string> bad;
    for (const auto& [name, t] : weights) {
      if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>()) bad.push_back(name);
    }
    return bad;
  });
}

// Writes the artifact, then loads it back as an inference node will; nothing is left behind
// when that fails.
absl::StatusOr<ModelImportResult> WriteAndVerify(const std::string& dir, ModelImportResult result) {
  auto reloaded = LoadArtifact(dir);
  if (!reloaded.ok()) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    return absl::InternalError(absl::StrCat("the written artifact does not load back: ", reloaded.status().message()));
  }
  result.manifest = reloaded->manifest;
  return result;
}

// What every imported model's manifest says: its name, spec, classes, preprocessing, and the
// file it came from (`sha256` of it) as its lineage.
kennel::v1::ModelManifest ImportedManifest(const ModelImportOptions& options, const kennel::v1::ModelSpec& spec,
                                           const kennel::v1::PreprocessSpec& preprocess, const std::string& sha256) {
  kennel::v1::ModelManifest manifest;
  manifest.set_name(options.name);
  *manifest.mutable_model() = spec;
  for (const auto& c : options.class_names) manifest.add_class_names(c);
  *manifest.mutable_preprocess() = preprocess;
  kennel::v1::Lineage& lineage = *manifest.mutable_lineage();
  std::error_code ec;
  lineage.set_init_weights(fs::absolute(options.weights_path, ec).string());
  lineage.set_source_sha256(sha256);
  lineage.set_imported(true);
  lineage.set_created_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
  return manifest;
}

absl::StatusOr<ModelImportResult> ImportScript(const ModelImportOptions& options, const kennel::v1::ModelSpec& spec,
                                               const kennel::v1::PreprocessSpec& preprocess) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(options.weights_path, int64_t{1} << 36));
  ASSIGN_OR_RETURN(std::shared_ptr<torch::jit::Module> module, LoadTorchScript(bytes, options.weights_path));
  auto checked = CheckTorchScript(*module, preprocess, spec.num_classes(), options.output);
  if (!checked.ok()) return absl::InvalidArgumentError(absl::StrCat(options.weights_path, ": ", checked.status().message()));
  ModelImportResult result;
  result.parameters = checked->parameters();
  result.tensors = static_cast<int64_t>(module->named_parameters().size() + module->named_buffers().size());
  kennel::v1::ModelManifest manifest = ImportedManifest(options, spec, preprocess, Sha256Hex(bytes));
  *manifest.mutable_scripted() = *checked;
  RETURN_IF_ERROR(WriteScriptArtifact(options.output_dir, manifest, *module));
  return WriteAndVerify(options.output_dir, std::move(result));
}

absl::StatusOr<ModelImportResult> ImportPackage(const ModelImportOptions& options, const kennel::v1::ModelSpec& spec,
                                                const kennel::v1::PreprocessSpec& preprocess) {
  ASSIGN_OR_RETURN(std::shared_ptr<AotiModel> model, AotiModel::Load(options.weights_path));
  auto checked = CheckAotiModel(*model, preprocess, spec.num_classes(), options.output);
  if (!checked.ok()) return absl::InvalidArgumentError(absl::StrCat(options.weights_path, ": ", checked.status().message()));
  model.reset();
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(options.weights_path, int64_t{1} << 36));
  kennel::v1::ModelManifest manifest = ImportedManifest(options, spec, preprocess, Sha256Hex(bytes));
  *manifest.mutable_scripted() = *checked;
  RETURN_IF_ERROR(WritePackageArtifact(options.output_dir, manifest, bytes));
  return WriteAndVerify(options.output_dir, ModelImportResult{});
}

}  // namespace

absl::StatusOr<ModelImportResult> ImportModel(const ModelImportOptions& options) {
  RETURN_IF_ERROR(ValidateModelName(options.name));
  RETURN_IF_ERROR(CheckClassNames(options.class_names));
  kennel::v1::ModelSpec spec = options.model;
  spec.set_num_classes(static_cast<int32_t>(options.class_names.size()));
  ASSIGN_OR_RETURN(spec, NormalizeModelSpec(spec));
  kennel::v1::PreprocessSpec preprocess = options.preprocess;
  if (preprocess.channels() == 0) preprocess.set_channels(spec.in_channels());
  ASSIGN_OR_RETURN(preprocess, NormalizePreprocessSpec(preprocess));
  if (preprocess.channels() != spec.in_channels()) {
    return absl::InvalidArgumentError(absl::StrCat("preprocessing makes ", preprocess.channels(),
                                                   "-channel inputs but the model takes ", spec.in_channels()));
  }
  if (spec.architecture() == kennel::v1::SMALL_CNN && (preprocess.height() != 28 || preprocess.width() != 28)) {
    return absl::InvalidArgumentError("the small CNN takes 28x28 inputs");
  }
  if (options.output_dir.empty()) return absl::InvalidArgumentError("an output folder is required");
  std::error_code ec;
  if (fs::exists(options.output_dir, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(options.output_dir, " already exists"));
  }

  if (spec.architecture() == kennel::v1::TORCHSCRIPT) return ImportScript(options, spec, preprocess);
  if (spec.architecture() == kennel::v1::AOTINDUCTOR) return ImportPackage(options, spec, preprocess);
  ASSIGN_OR_RETURN(StateDict weights, ReadWeightsFile(options.weights_path));
  ASSIGN_OR_RETURN(std::string source_sha256, Sha256File(options.weights_path));
  ASSIGN_OR_RETURN(std::vector<std::string> non_finite, NonFinite(weights));
  if (!non_finite.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(options.weights_path, " holds NaN or infinite values in: ",
                                                   absl::StrJoin(non_finite, ", ")));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Classifier> model, CreateModel(spec));
  if (absl::Status loaded = LoadStateDict(*model, weights, {.strict = true}); !loaded.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.weights_path, " does not fit ", ArchitectureName(spec.architecture()), " with a ",
        spec.head() == kennel::v1::MLP ? "MLP" : "linear", " head and ", spec.num_classes(), " classes: ",
        HeadHint(weights, spec), loaded.message()));
  }

  ModelImportResult result;
  std::map<std::string, int> converted;
  for (const auto& [name, t] : weights) {
    ++result.tensors;
    if (t.is_floating_point() && t.scalar_type() != torch::kFloat32) ++converted[c10::toString(t.scalar_type())];
  }
  for (const auto& [dtype, n] : converted) result.conversions.push_back(absl::StrCat(dtype, ": ", n));
  for (const auto& p : model->parameters()) result.parameters += p.numel();

  const kennel::v1::ModelManifest manifest = ImportedManifest(options, spec, preprocess, source_sha256);
  model->eval();
  RETURN_IF_ERROR(WriteArtifact(options.output_dir, manifest, *model));
  return WriteAndVerify(options.output_dir, std::move(result));
}

}  // namespace kennel::core
