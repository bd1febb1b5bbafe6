// What a model is, without building one: validation and defaults of ModelSpec and
// PreprocessSpec, and architecture names. Torch-free, so the coordinator's job checks and
// kennelctl use the same rules as the trainers and inference nodes that build the models.
#ifndef KENNEL_CORE_MODEL_SPEC_H_
#define KENNEL_CORE_MODEL_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kennel/v1/model.pb.h"

namespace kennel::core {

// A model name: 1 to 128 letters, digits, '-', '_' and '.', not "." or ".." (it names a
// folder in the coordinator's artifact store). INVALID_ARGUMENT saying what is wrong.
absl::Status ValidateModelName(absl::string_view name);

// A model version as nodes and the coordinator name it: "name:version" (version >= 1).
struct ModelRef {
  std::string name;
  int64_t version = 0;
};
// nullopt for anything else ("" included).
std::optional<ModelRef> ParseModelRef(absl::string_view text);

// Fills defaults (in_channels 3, head LINEAR, head_hidden 128) into `spec` and checks it: the
// spec CreateModel (core/ml/models.h) builds. INVALID_ARGUMENT naming what is wrong.
absl::StatusOr<kennel::v1::ModelSpec> NormalizeModelSpec(kennel::v1::ModelSpec spec);

// "small_cnn", "resnet18", "resnet34", "resnet50" <-> enum; case-insensitive parse.
absl::StatusOr<kennel::v1::Architecture> ParseArchitecture(absl::string_view name);
std::string ArchitectureName(kennel::v1::Architecture arch);
// TORCHSCRIPT or AOTINDUCTOR: a model that is the user's code (admins only), with no head to
// choose and no weights-only path.
bool IsUserCode(kennel::v1::Architecture arch);

// Width of the feature vector the head receives (512 for ResNet-18/34, 2048 for ResNet-50,
// 128 for the small CNN).
int64_t FeatureWidth(kennel::v1::Architecture arch);

// Fills in defaults (channels 3, bilinear, mean 0 / std 1) and validates sizes and lengths.
absl::StatusOr<kennel::v1::PreprocessSpec> NormalizePreprocessSpec(
    kennel::v1::PreprocessSpec spec);

// What Kennel uses when a user gives no preprocessing: the small CNN takes 28x28 grayscale
// normalised with Fashion-MNIST's mean/std; ResNets take `image_size` (0: 224) RGB, the
// shorter side resized to 8/7 of it before a center crop, ImageNet's mean/std (torchvision's
// evaluation transform).
kennel::v1::PreprocessSpec DefaultPreprocess(kennel::v1::Architecture arch, int image_size = 0);

// Number of floats the preprocessing writes per image: channels * height * width.
int64_t PreprocessedSize(const kennel::v1::PreprocessSpec& spec);

// The shorter side an image needs before the evaluation transform (for DecodeImage's
// reduced-scale decode).
int DecodeHint(const kennel::v1::PreprocessSpec& spec);

}  // namespace kennel::core

#endif  // KENNEL_CORE_MODEL_SPEC_H_
