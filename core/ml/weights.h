// Reading and writing model weights as users have them:
//  - PyTorch's `torch.save(model.state_dict(), path)` (zip + pickle), read by a weights-only
//    unpickler that accepts tensors, dicts, lists, tuples and scalars and refuses any other
//    Python global (no code from the file runs). LibTorch 1.13's torch::pickle_load cannot read
//    the usual OrderedDict-with-_metadata file; this can.
//  - safetensors (what timm and Hugging Face publish), read and written. Kennel's own model
//    artifacts store their weights this way.
// All functions are thread-safe (no shared state).
#ifndef KENNEL_CORE_ML_WEIGHTS_H_
#define KENNEL_CORE_ML_WEIGHTS_H_

#include <torch/nn/module.h>
#include <torch/types.h>

#include <map>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kennel::core {

// Parameter / buffer name -> tensor (CPU), ordered by name.
using StateDict = std::map<std::string, torch::Tensor>;

// Reads a state_dict saved with torch.save (zip format, PyTorch >= 1.6). A file holding a
// checkpoint dict with a "state_dict", "model_state_dict" or "model" entry yields that entry.
// A "module." prefix on every key (DataParallel) is removed.
absl::StatusOr<StateDict> ReadTorchStateDict(const std::string& path);
// The same for a file's bytes already in memory; `name` only labels errors.
absl::StatusOr<StateDict> ParseTorchStateDict(const std::string& bytes, absl::string_view name);

// safetensors: parse / serialize whole files in memory.
absl::StatusOr<StateDict> ParseSafetensors(absl::string_view bytes);
absl::StatusOr<std::string> SerializeSafetensors(const StateDict& tensors);

// Reads either format, chosen by the file's magic bytes.
absl::StatusOr<StateDict> ReadWeightsFile(const std::string& path);

// The module's parameters and buffers (detached, sharing storage).
StateDict GetStateDict(const torch::nn::Module& module);

struct LoadOptions {
  // Strict: every name must be present in both with equal shapes. Non-strict: entries under
  // head_prefix are ignored on both sides (the model keeps its freshly initialised head, as
  // when fine-tuning on new classes); everything else is still checked strictly.
  bool strict = true;
  std::string head_prefix = "fc.";
};

// Copies `weights` into `module`'s parameters and buffers. On any mismatch nothing is copied
// and INVALID_ARGUMENT lists every missing, unexpected and wrongly shaped name.
absl::Status LoadStateDict(torch::nn::Module& module, const StateDict& weights,
                           const LoadOptions& options = {});

}  // namespace kennel::core

#endif  // KENNEL_CORE_ML_WEIGHTS_H_
