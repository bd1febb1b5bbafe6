// A .pth file (torch.save's zip) as `kennelctl import` reads it: LibTorch's zip reader, then
// the weights-only unpickler and the state_dict rules. Any bytes give a state_dict or
// INVALID_ARGUMENT, never a crash.
#include <cstddef>
#include <cstdint>

#include "core/ml/weights.h"
#include "fuzz/seeds.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto dict = kennel::core::ParseTorchStateDict(bytes, "fuzz input");
  if (!dict.ok()) {
    kennel::fuzz::Check(dict.status().code() == absl::StatusCode::kInvalidArgument,
                        "a bad .pth is INVALID_ARGUMENT");
    return 0;
  }
  for (const auto& [name, tensor] : *dict) {
    kennel::fuzz::Check(tensor.defined(), "every entry holds a tensor");
  }
  return 0;
}
