#include "core/ml/weights.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/byte_order.h"
#include "core/file_type.h"
#include "core/files.h"
#include "core/status_macros.h"
#include "core/ml/torch_errors.h"
#include "core/ml/torch_pickle.h"
#include "core/zip_entries.h"

namespace kennel::core {
namespace {

using pickle::Value;

constexpr int64_t kMaxSafetensorsHeader = 100 << 20;

struct DtypeName {
  torch::Dtype dtype;
  const char* name;
};
constexpr DtypeName kSafetensorsDtypes[] = {
    {torch::kFloat32, "F32"}, {torch::kFloat64, "F64"}, {torch::kFloat16, "F16"},
    {torch::kBFloat16, "BF16"}, {torch::kInt64, "I64"}, {torch::kInt32, "I32"},
    {torch::kInt16, "I16"}, {torch::kInt8, "I8"},     {torch::kUInt8, "U8"},
    {torch::kBool, "BOOL"},
};

std::string ShapeString(c10::IntArrayRef sizes) { return c10::str(sizes); }

// A state_dict is a dict of string -> tensor; checkpoints often nest it one level down.
absl::StatusOr<StateDict> ToStateDict(const Value& root, int depth = 0) {
  if (root.kind != Value::Kind::kDict) {
    return absl::InvalidArgumentError("checkpoint does not hold a dict of tensors");
  }
  for (const char* nested : {"state_dict", "model_state_dict", "model"}) {
    for (const auto& [k, v] : root.entries) {
      if (k->kind == Value::Kind::kString && k->s == nested && v->kind == Value::Kind::kDict) {
        // (A pickle can make a dict its own entry: a real checkpoint nests a level or two.)
        if (depth >= 4) return absl::InvalidArgumentError("checkpoint nests its state_dict too deep");
        return ToStateDict(*v, depth + 1);
      }
    }
  }
  StateDict out;
  for (const auto& [k, v] : root.entries) {
    if (k->kind != Value::Kind::kString) {
      return absl::InvalidArgumentError("checkpoint dict has a non-string key");
    }
    if (v->kind != Value::Kind::kTensor) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint entry '", k->s, "' is not a tensor"));
    }
    out[k->s] = v->tensor;
  }
  return out;
}

// DataParallel wraps the model as "module", prefixing every key.
StateDict StripModulePrefix(StateDict dict) {
  if (dict.empty()) return dict;
  for (const auto& [k, v] : dict) {
    if (!absl::StartsWith(k, "module.")) return dict;
  }
  StateDict out;
  for (auto& [k, v] : dict) out[k.substr(7)] = std::move(v);
  return out;
}

}  // namespace

namespace {

// LibTorch's zip reader allocates each record's declared size before reading it, so an
// archive claiming a record of gigabytes made it ask for gigabytes (the torch_zip fuzzer's
// out-of-memory). Walks the central directory first and refuses any record declared larger
// than the archive (PyTorch stores records uncompressed), and anything that is not a zip.
absl::Status CheckZipRecordSizes(const ZipRead& read, uint64_t size, const std::string& name) {
  auto entries = ListZipEntries(read, size);
  if (entries.ok()) return absl::OkStatus();
  const absl::string_view why = entries.status().message();
  if (absl::StartsWith(why, "record ")) return absl::InvalidArgumentError(absl::StrCat(name, ": ", why));
  return absl::InvalidArgumentError(absl::StrCat(name, " is not a PyTorch zip checkpoint: ", why));
}

// Reads the state_dict of the checkpoint `make_reader` opens; `name` labels errors.
absl::StatusOr<StateDict> ReadCheckpointZip(
    const std::string& name,
    const std::function<std::shared_ptr<caffe2::serialize::PyTorchStreamReader>()>& make_reader) {
  auto reader = CallTorch(absl::StrCat("reading ", name, " as a PyTorch zip checkpoint"), make_reader,
                          absl::StatusCode::kInvalidArgument);
  if (!reader.ok()) return reader.status();
  auto record = [&](const std::string& record_name) {
    return CallTorch(absl::StrCat("reading record ", record_name, " of ", name), [&] {
      auto [ptr, size] = (*reader)->getRecord(record_name);
      return std::string(static_cast<const char*>(ptr.get()), size);
    }, absl::StatusCode::kInvalidArgument);
  };
  ASSIGN_OR_RETURN(std::string program, record("data.pkl"));
  pickle::StorageLoader loader = [&](const std::string& key, torch::Dtype dtype,
                                     int64_t numel) -> absl::StatusOr<torch::Tensor> {
    ASSIGN_OR_RETURN(std::string bytes, record(absl::StrCat("data/", key)));
    const int64_t element = static_cast<int64_t>(c10::elementSize(dtype));
    if (numel < 0 || numel > static_cast<int64_t>(bytes.size()) / element) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": storage ", key, " holds ", bytes.size(), " bytes, expected ", numel, " elements of ",
          element));
    }
    torch::Tensor t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    if (numel > 0) std::memcpy(t.data_ptr(), bytes.data(), static_cast<size_t>(numel * element));
    return t;
  };
  auto root = pickle::Unpickle(program, loader);
  if (!root.ok()) {
    return absl::Status(root.status().code(), absl::StrCat(name, ": ", root.status().message()));
  }
  ASSIGN_OR_RETURN(StateDict dict, ToStateDict(root->root()));
  return StripModulePrefix(std::move(dict));
}

}  // namespace

absl::StatusOr<StateDict> ReadTorchStateDict(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  file.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(file.tellg());
  RETURN_IF_ERROR(CheckZipRecordSizes(ZipReadFromStream(file), size, path));
  return ReadCheckpointZip(path, [&] {
    return std::make_shared<caffe2::serialize::PyTorchStreamReader>(path);
  });
}

absl::StatusOr<StateDict> ParseTorchStateDict(const std::string& bytes, absl::string_view name) {
  RETURN_IF_ERROR(CheckZipRecordSizes(ZipReadFromBytes(bytes), bytes.size(), std::string(name)));
  std::istringstream in(bytes);
  return ReadCheckpointZip(std::string(name), [&] {
    return std::make_shared<caffe2::serialize::PyTorchStreamReader>(&in);
  });
}

absl::StatusOr<StateDict> ParseSafetensors(absl::string_view bytes) {
  if (bytes.size() < 8) return absl::InvalidArgumentError("safetensors file shorter than 8 bytes");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > static_cast<uint64_t>(kMaxSafetensorsHeader) || header_len > bytes.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors header length ", header_len, " exceeds the file (", bytes.size(), " bytes)"));
  }
  nlohmann::json header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + header_len, nullptr,
                                                /*allow_exceptions=*/false);
  if (!header.is_object()) return absl::InvalidArgumentError("safetensors header is not a JSON object");
  const absl::string_view data = bytes.substr(8 + header_len);
  StateDict out;
  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    const nlohmann::json& info = item.value();
    if (name == "__metadata__") continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("safetensors entry '", name, "': ", why));
    };
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") ||
        !info.contains("data_offsets") || !info["dtype"].is_string() ||
        !info["shape"].is_array() || !info["data_offsets"].is_array() ||
        info["data_offsets"].size() != 2) {
      return bad("needs dtype, shape and data_offsets");
    }
    const std::string dtype_name = info["dtype"].get<std::string>();
    const DtypeName* dtype = nullptr;
    for (const auto& d : kSafetensorsDtypes) {
      if (dtype_name == d.name) dtype = &d;
    }
    if (dtype == nullptr) return bad(absl::StrCat("unsupported dtype ", dtype_name));
    std::vector<int64_t> shape;
    int64_t numel = 1;
    for (const auto& dim : info["shape"]) {
      if (!dim.is_number_unsigned() || dim.get<uint64_t>() > (uint64_t{1} << 40)) {
        return bad("bad shape");
      }
      shape.push_back(dim.get<int64_t>());
      numel *= shape.back();
      if (numel > (int64_t{1} << 40)) return bad("bad shape");
    }
    const auto& off = info["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) return bad("bad data_offsets");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    const uint64_t want = static_cast<uint64_t>(numel) * c10::elementSize(dtype->dtype);
    if (begin > end || end > data.size()) return bad("data_offsets outside the file (truncated?)");
    if (end - begin != want) {
      return bad(absl::StrCat("holds ", end - begin, " bytes, its shape needs ", want));
    }
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dtype->dtype));
    if (want > 0) std::memcpy(t.data_ptr(), data.data() + begin, want);
    out[name] = std::move(t);
  }
  return out;
}

absl::StatusOr<std::string> SerializeSafetensors(const StateDict& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::vector<torch::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const DtypeName* dtype = nullptr;
    for (const auto& d : kSafetensorsDtypes) {
      if (tensor.scalar_type() == d.dtype) dtype = &d;
    }
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' has a dtype safetensors cannot hold"));
    }
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype->name},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(t));
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // Align the data section to 8 bytes.
  std::string out(8, '\0');
  const uint64_t header_len = json.size();
  std::memcpy(out.data(), &header_len, 8);
  out += json;
  out.reserve(out.size() + offset);
  for (const auto& t : contiguous) {
    out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return out;
}

absl::StatusOr<StateDict> ReadWeightsFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string head, ReadFilePrefix(path, kFileTypeProbeBytes));
  const FileType type = DetectFileType(head);
  switch (type) {
    case FileType::kTorchZip:
      return ReadTorchStateDict(path);
    case FileType::kSafetensors: {
      ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, int64_t{1} << 36));
      auto dict = ParseSafetensors(bytes);
      if (!dict.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(path, " is not a valid safetensors file: ",
                                                       dict.status().message()));
      }
      return StripModulePrefix(*std::move(dict));
    }
    case FileType::kTorchLegacy:
      return absl::InvalidArgumentError(absl::StrCat(
          path, " is ", DescribeFileType(type), "; re-save it with a current PyTorch: ",
          "torch.save(torch.load(p), p)"));
    case FileType::kTorchScript:
      return absl::InvalidArgumentError(absl::StrCat(
          path, " is ", DescribeFileType(type), "; save the weights instead: ",
          "torch.save(model.state_dict(), p)"));
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          path, " is ", DescribeFileType(type), ", not model weights (a torch.save state_dict .pth "
          "or a .safetensors file)"));
  }
}

StateDict GetStateDict(const torch::nn::Module& module) {
  StateDict out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    out[item.key()] = item.value().detach();
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    out[item.key()] = item.value().detach();
  }
  return out;
}

absl::Status LoadStateDict(torch::nn::Module& module, const StateDict& weights,
                           const LoadOptions& options) {
  auto skip = [&](const std::string& name) {
    return !options.strict && !options.head_prefix.empty() &&
           absl::StartsWith(name, options.head_prefix);
  };
  std::unordered_map<std::string, torch::Tensor> targets;
  for (auto& item : module.named_parameters(true)) targets[item.key()] = item.value();
  for (auto& item : module.named_buffers(true)) targets[item.key()] = item.value();

  std::vector<std::string> missing, unexpected, shape_errors, dtype_errors;
  for (const auto& [name, target] : targets) {
    if (skip(name)) continue;
    auto it = weights.find(name);
    if (it == weights.end()) {
      missing.push_back(name);
      continue;
    }
    if (it->second.sizes() != target.sizes()) {
      shape_errors.push_back(absl::StrCat(name, " (file ", ShapeString(it->second.sizes()),
                                          ", model ", ShapeString(target.sizes()), ")"));
    }
    // Floating-point precisions convert (fp16/bf16/fp64 weights load into fp32 parameters,
    // as torch's load_state_dict does); a float where an integer belongs, or the reverse,
    // is a different tensor.
    if (it->second.is_floating_point() != target.is_floating_point()) {
      dtype_errors.push_back(absl::StrCat(name, " (file ", c10::toString(it->second.scalar_type()),
                                          ", model ", c10::toString(target.scalar_type()), ")"));
    }
  }
  for (const auto& [name, tensor] : weights) {
    if (!skip(name) && targets.count(name) == 0) unexpected.push_back(name);
  }
  std::sort(missing.begin(), missing.end());
  std::sort(shape_errors.begin(), shape_errors.end());
  std::sort(dtype_errors.begin(), dtype_errors.end());
  if (!missing.empty() || !unexpected.empty() || !shape_errors.empty() || !dtype_errors.empty()) {
    std::vector<std::string> parts;
    if (!missing.empty()) parts.push_back(absl::StrCat("missing: ", absl::StrJoin(missing, ", ")));
    if (!unexpected.empty()) {
      parts.push_back(absl::StrCat("unexpected: ", absl::StrJoin(unexpected, ", ")));
    }
    if (!shape_errors.empty()) {
      parts.push_back(absl::StrCat("shape mismatch: ", absl::StrJoin(shape_errors, ", ")));
    }
    if (!dtype_errors.empty()) {
      parts.push_back(absl::StrCat("dtype mismatch: ", absl::StrJoin(dtype_errors, ", ")));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("weights do not match the model; ", absl::StrJoin(parts, "; ")));
  }
  return CallTorch("copying weights", [&] {
    torch::NoGradGuard no_grad;
    for (auto& [name, target] : targets) {
      if (skip(name)) continue;
      target.copy_(weights.at(name));
    }
  });
}

}  // namespace kennel::core
