#include "core/file_type.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "absl/strings/match.h"
#include "core/byte_order.h"
#include "core/files.h"

namespace kennel::core {
namespace {

bool Contains(absl::string_view haystack, absl::string_view needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

// The first local file header's name of a zip ("archive/data.pkl", "model/constants.pkl").
absl::string_view FirstZipEntry(absl::string_view head) {
  if (head.size() < 30) return {};
  const size_t len = LoadLittleEndian(head, 26, 2);
  return head.substr(30, std::min(len, head.size() - 30));
}

}  // namespace

FileType DetectFileType(absl::string_view head) {
  if (head.empty()) return FileType::kEmpty;
  if (absl::StartsWith(head, "PK\x03\x04")) {
    // torch.save writes <archive>/data.pkl first; torch.jit.save writes the tensors
    // (<archive>/data/0, ...) first and its code and constants after them, and a module
    // without tensors (torch.jit.freeze keeps them as constants) starts with data.pkl and
    // then its code/, which no torch.save file has.
    const absl::string_view first = FirstZipEntry(head);
    // An AOTInductor package starts with its compiled model's files.
    if (Contains(first, "/data/aotinductor/")) return FileType::kAotiPackage;
    if (absl::EndsWith(first, "/data.pkl")) {
      return Contains(head, "/code/__torch__") ? FileType::kTorchScript : FileType::kTorchZip;
    }
    if (Contains(first, "/data/") || Contains(first, "/code/") || absl::EndsWith(first, "/constants.pkl")) {
      return FileType::kTorchScript;
    }
    return FileType::kZip;
  }
  // Legacy torch.save: protocol-2 pickle of the magic number 0x1950a86a20f9469cfc6c.
  if (absl::StartsWith(head, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")) {
    return FileType::kTorchLegacy;
  }
  // safetensors: a little-endian header length, then the JSON header. Checked before pickles:
  // a length like 0x280 starts with the bytes of a protocol-2 pickle.
  if (head.size() >= 10 && head[8] == '{') {
    const uint64_t n = LoadLittleEndian(head, 0, 8);
    if (n >= 2 && n < (uint64_t{100} << 20)) return FileType::kSafetensors;
  }
  if (head.size() >= 2 && static_cast<uint8_t>(head[0]) == 0x80 && head[1] >= 2 && head[1] <= 5) {
    return FileType::kPickle;
  }
  if (absl::StartsWith(head, "\x93NUMPY")) return FileType::kNumpy;
  if (absl::StartsWith(head, "\x89HDF\r\n\x1a\n")) return FileType::kHdf5;
  if (absl::StartsWith(head, "GGUF")) return FileType::kGguf;
  if (absl::StartsWith(head, "\xFF\xD8\xFF")) return FileType::kJpeg;
  if (absl::StartsWith(head, "\x89PNG\r\n\x1a\n")) return FileType::kPng;
  if (absl::StartsWith(head, "\x1f\x8b")) return FileType::kGzip;
  if (absl::StartsWith(head, "\x7f" "ELF")) return FileType::kElf;
  if (head.size() > 262 && head.substr(257, 5) == "ustar") return FileType::kTar;
  // ONNX: a ModelProto starts with ir_version (field 1, varint) and names its producer.
  if (head[0] == '\x08' && (Contains(head.substr(0, 64), "pytorch") || Contains(head.substr(0, 64), "onnx"))) {
    return FileType::kOnnx;
  }
  const bool printable = std::all_of(head.begin(), head.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x80 || std::isprint(u) || std::isspace(u);
  });
  if (printable) {
    const size_t first = head.find_first_not_of(" \t\r\n");
    if (first != absl::string_view::npos && (head[first] == '{' || head[first] == '[')) return FileType::kJson;
    return FileType::kText;
  }
  return FileType::kUnknown;
}

FileType DetectFileTypeOfPath(const std::string& path) {
  auto head = ReadFilePrefix(path, kFileTypeProbeBytes);
  return head.ok() ? DetectFileType(*head) : FileType::kUnknown;
}

std::string DescribeFileType(FileType type) {
  switch (type) {
    case FileType::kUnknown: return "a file of unrecognised binary content";
    case FileType::kEmpty: return "an empty file";
    case FileType::kTorchZip: return "a PyTorch zip file (torch.save)";
    case FileType::kTorchScript: return "a TorchScript archive (torch.jit.save), which holds code, not a state_dict";
    case FileType::kAotiPackage: return "an AOTInductor package (.pt2)";
    case FileType::kTorchLegacy: return "a legacy PyTorch file (torch.save before 1.6, or without zip serialization)";
    case FileType::kPickle: return "a Python pickle that is not a torch.save file";
    case FileType::kSafetensors: return "a safetensors file";
    case FileType::kNumpy: return "a NumPy .npy array";
    case FileType::kZip: return "a zip archive that is not a torch.save file (an .npz?)";
    case FileType::kHdf5: return "an HDF5 file (Keras .h5?)";
    case FileType::kOnnx: return "an ONNX model";
    case FileType::kGguf: return "a GGUF file";
    case FileType::kJpeg: return "a JPEG image";
    case FileType::kPng: return "a PNG image";
    case FileType::kGzip: return "a gzip-compressed file";
    case FileType::kTar: return "a tar archive";
    case FileType::kElf: return "an executable or shared library (ELF)";
    case FileType::kJson: return "a JSON text file";
    case FileType::kText: return "a text file";
  }
  return "an unknown file";
}

}  // namespace kennel::core
