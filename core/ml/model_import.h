// Turns weights trained elsewhere (a torchvision `torch.save(model.state_dict())` file or a
// .safetensors file), or a whole TorchScript module, plus what Kennel needs to serve them (architecture, head, class names,
// preprocessing) into a verified model artifact. Used by `kennelctl import`.
#ifndef KENNEL_CORE_ML_MODEL_IMPORT_H_
#define KENNEL_CORE_ML_MODEL_IMPORT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kennel/v1/model.pb.h"

namespace kennel::core {

struct ModelImportOptions {
  std::string weights_path;  // .pth (torch.save state_dict, zip) or .safetensors.
  std::string name;          // Model name (letters, digits, '-', '_', '.').
  // Architecture, head, head_hidden, in_channels; num_classes comes from class_names.
  kennel::v1::ModelSpec model;
  std::vector<std::string> class_names;  // In the order of the head's outputs.
  kennel::v1::PreprocessSpec preprocess;  // channels follow the model's in_channels.
  std::string output_dir;                 // The artifact folder to create; must not exist.
  // Architecture TORCHSCRIPT: weights_path is a TorchScript archive (torch.jit.save), checked
  // on a dummy batch of two; `output` says what its forward returns. AOTINDUCTOR: an
  // AOTInductor package (.pt2), checked the same way after its PyTorch version (the PyTorch
  // 2.x build only).
  kennel::v1::OutputKind output = kennel::v1::LOGITS;
};

struct ModelImportResult {
  kennel::v1::ModelManifest manifest;  // As written (version 0 until registered).
  int64_t tensors = 0;                 // Parameters and buffers loaded.
  int64_t parameters = 0;              // Parameter elements.
  // Floating-point tensors stored in another precision and converted to float32, by source
  // dtype: "float16: 320".
  std::vector<std::string> conversions;
};

// Reads, checks and converts. INVALID_ARGUMENT naming everything that is wrong: a file that
// is not weights (saying what it is), every missing / unexpected / wrongly shaped / wrongly
// typed tensor (with a hint when the head's size or kind disagrees with the options), NaN or
// infinite values, bad names, class lists or preprocessing. ALREADY_EXISTS when output_dir
// exists. Nothing is left at output_dir unless the artifact was written whole and loads back.
absl::StatusOr<ModelImportResult> ImportModel(const ModelImportOptions& options);

}  // namespace kennel::core

#endif  // KENNEL_CORE_ML_MODEL_IMPORT_H_
