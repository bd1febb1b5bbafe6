// Weights-only reader for the pickle inside PyTorch's zip checkpoints (internal to
// weights.cc; exposed for tests).
#ifndef KENNEL_CORE_ML_TORCH_PICKLE_H_
#define KENNEL_CORE_ML_TORCH_PICKLE_H_

#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace kennel::core::pickle {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

// A Python value restricted to what a state_dict holds.
struct Value {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal,
                    kStorage, kTensor };
  Kind kind = Kind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // kString; kGlobal as "module.name"; kStorage dtype name
  std::vector<ValuePtr> items;                          // kTuple, kList
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;   // kDict, in insertion order
  torch::Tensor tensor;                                 // kStorage (1-D, flat), kTensor
};

// Loads storage `key` of `numel` elements of `dtype` (from the zip's data/<key> record).
using StorageLoader =
    std::function<absl::StatusOr<torch::Tensor>(const std::string& key, torch::Dtype dtype,
                                                int64_t numel)>;

// The values a pickle program built. A program can put a container inside itself (through
// the memo), so containers may form cycles; destroying this breaks them, without recursion
// however deep the nesting.
class Unpickled {
 public:
  Unpickled(ValuePtr root, std::vector<ValuePtr> containers)
      : root_(std::move(root)), containers_(std::move(containers)) {}
  Unpickled(Unpickled&&) = default;
  Unpickled& operator=(Unpickled&&) = delete;
  ~Unpickled();

  const Value& root() const { return *root_; }

 private:
  ValuePtr root_;
  std::vector<ValuePtr> containers_;  // Every tuple, list and dict the program made.
};

// Runs the pickle program in `data`. INVALID_ARGUMENT for anything outside the weights-only
// subset (naming the offending global or opcode) and for malformed input.
absl::StatusOr<Unpickled> Unpickle(absl::string_view data, const StorageLoader& load_storage);

}  // namespace kennel::core::pickle

#endif  // KENNEL_CORE_ML_TORCH_PICKLE_H_
