// The weights-only unpickler run on data.pkl of every .pth a user imports: any program gives
// a value tree or INVALID_ARGUMENT, never a crash, a leak (programs can make cycles through
// the memo), unbounded recursion or a tensor view outside its storage.
#include <cstddef>
#include <cstdint>

#include "core/ml/torch_pickle.h"
#include "fuzz/seeds.h"

namespace {

using kennel::core::pickle::Value;

// Every tensor must lie inside its storage; walks the tree without recursion.
void CheckTensors(const Value& root) {
  std::vector<const Value*> todo = {&root};
  size_t seen = 0;
  while (!todo.empty() && seen++ < 100000) {  // Shared subtrees may repeat: bounded walk.
    const Value* v = todo.back();
    todo.pop_back();
    if (v->kind == Value::Kind::kTensor) {
      kennel::fuzz::Check(v->tensor.defined(), "a tensor value holds a tensor");
      const int64_t bytes = v->tensor.storage().nbytes();
      int64_t last = v->tensor.storage_offset();
      for (int64_t d = 0; d < v->tensor.dim(); ++d) {
        if (v->tensor.size(d) == 0) { last = -1; break; }
        last += (v->tensor.size(d) - 1) * v->tensor.stride(d);
      }
      kennel::fuzz::Check(last < bytes / static_cast<int64_t>(v->tensor.element_size()),
                          "a tensor view lies inside its storage");
    }
    for (const auto& item : v->items) todo.push_back(item.get());
    for (const auto& [k, val] : v->entries) {
      todo.push_back(k.get());
      todo.push_back(val.get());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Seeds: data.pkl of torch.save'd state_dicts (fuzz/make_torch_seeds.py).
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view program(reinterpret_cast<const char*>(data), size);
  // As weights.cc's loader, which never makes more elements than the record's bytes hold.
  kennel::core::pickle::StorageLoader loader =
      [](const std::string&, torch::Dtype dtype, int64_t numel) -> absl::StatusOr<torch::Tensor> {
    if (numel < 0 || numel > (1 << 16)) return absl::InvalidArgumentError("storage too large");
    return torch::zeros({numel}, torch::TensorOptions().dtype(dtype));
  };
  auto result = kennel::core::pickle::Unpickle(program, loader);
  if (!result.ok()) {
    kennel::fuzz::Check(result.status().code() == absl::StatusCode::kInvalidArgument,
                        "a bad program is INVALID_ARGUMENT");
    return 0;
  }
  CheckTensors(result->root());
  return 0;
}
