// Model artifacts: a folder holding manifest.json (the proto3 JSON form of
// kennel.v1.ModelManifest: architecture, classes, preprocessing, metrics, lineage, checksum)
// and the weights as safetensors. Written atomically (staging folder, fsync, rename) and
// verified on load; inference needs nothing else to serve a model.
#ifndef KENNEL_CORE_ML_ARTIFACT_H_
#define KENNEL_CORE_ML_ARTIFACT_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/ml/models.h"
#include "kennel/v1/model.pb.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace kennel::core {

class AotiModel;  // core/ml/aoti_model.h

inline constexpr int kArtifactFormatVersion = 1;
inline constexpr char kManifestFile[] = "manifest.json";
inline constexpr char kWeightsFile[] = "weights.safetensors";

// Checks a manifest's model and preprocessing specs and its class list; fills defaults.
absl::StatusOr<kennel::v1::ModelManifest> ValidateManifest(kennel::v1::ModelManifest manifest);

// Writes `model`'s weights and `manifest` (with format version, weights file, size and
// SHA-256 filled in) as a new folder `dir`. ALREADY_EXISTS if `dir` exists: versions are
// immutable. Nothing is left at `dir` unless the whole artifact was written.
absl::Status WriteArtifact(const std::string& dir, kennel::v1::ModelManifest manifest,
                           const Classifier& model);

// Reads and validates manifest.json alone.
absl::StatusOr<kennel::v1::ModelManifest> ReadManifest(const std::string& dir);
// The same for a manifest's text; `name` (its folder) labels errors.
absl::StatusOr<kennel::v1::ModelManifest> ParseManifest(absl::string_view json, absl::string_view name);

inline constexpr char kScriptFile[] = "model.pt";
inline constexpr char kAotiFile[] = "model.pt2";

struct LoadedModel {
  kennel::v1::ModelManifest manifest;
  // In eval mode; exactly one is set: `model` for the built-in architectures, `script` for a
  // TORCHSCRIPT one, `aoti` for an AOTINDUCTOR one.
  std::shared_ptr<Classifier> model;
  std::shared_ptr<torch::jit::Module> script;
  std::shared_ptr<AotiModel> aoti;  // AOTINDUCTOR.
};

// A TorchScript model's artifact: `manifest` (architecture TORCHSCRIPT, its `scripted` info)
// and the module's archive as model.pt. As WriteArtifact otherwise.
absl::Status WriteScriptArtifact(const std::string& dir, kennel::v1::ModelManifest manifest,
                                 torch::jit::Module& module);

// An AOTInductor model's artifact: `manifest` (architecture AOTINDUCTOR, its `scripted` info)
// and the package's bytes as model.pt2. As WriteArtifact otherwise.
absl::Status WritePackageArtifact(const std::string& dir, kennel::v1::ModelManifest manifest,
                                  absl::string_view package);

// Reads the manifest, verifies the weights' size and SHA-256, builds the model and loads the
// weights strictly (or loads a TORCHSCRIPT model's archive). DATA_LOSS for a corrupt or truncated artifact, INVALID_ARGUMENT for a
// manifest that does not describe a valid model, NOT_FOUND for a missing one.
absl::StatusOr<LoadedModel> LoadArtifact(const std::string& dir);

std::string ManifestToJson(const kennel::v1::ModelManifest& manifest);

}  // namespace kennel::core

#endif  // KENNEL_CORE_ML_ARTIFACT_H_
