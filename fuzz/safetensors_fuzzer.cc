// safetensors, the weights of every model artifact and of imports: any bytes give tensors or
// INVALID_ARGUMENT, never a crash or a read outside the data; what parses writes back and
// parses again to the same tensors.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/ml/weights.h"
#include "fuzz/seeds.h"

namespace {

std::vector<std::string> Seeds() {
  using kennel::core::StateDict;
  std::vector<StateDict> dicts;
  dicts.push_back({{"fc.weight", torch::arange(6, torch::kFloat32).reshape({2, 3})},
                   {"fc.bias", torch::zeros({2})}});
  dicts.push_back({{"bn.num_batches_tracked", torch::tensor(int64_t{7})},
                   {"half", torch::ones({4}, torch::kFloat16)},
                   {"bf", torch::ones({2, 2}, torch::kBFloat16)}});
  dicts.push_back({{"empty", torch::zeros({0, 3})}, {"mask", torch::ones({3}, torch::kBool)}});
  dicts.push_back({});
  std::vector<std::string> out;
  for (const auto& d : dicts) out.push_back(*kennel::core::SerializeSafetensors(d));
  return out;
}

bool SameBytes(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const torch::Tensor x = a.contiguous(), y = b.contiguous();
  if (x.numel() == 0) return true;
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kennel::fuzz::WriteSeedsIfAsked(Seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto dict = kennel::core::ParseSafetensors(bytes);
  if (!dict.ok()) {
    kennel::fuzz::Check(dict.status().code() == absl::StatusCode::kInvalidArgument,
                        "bad safetensors are INVALID_ARGUMENT");
    return 0;
  }
  auto written = kennel::core::SerializeSafetensors(*dict);
  kennel::fuzz::Check(written.ok(), "parsed tensors serialize");
  auto again = kennel::core::ParseSafetensors(*written);
  kennel::fuzz::Check(again.ok() && again->size() == dict->size(), "written tensors parse");
  for (const auto& [name, tensor] : *dict) {
    kennel::fuzz::Check(again->count(name) > 0 && SameBytes(again->at(name), tensor),
                        "a round trip keeps every tensor");
  }
  return 0;
}
