// Says what a file is from its first bytes, for error messages that tell a user what they
// handed Kennel ("a TorchScript archive", "a JPEG image") instead of a parser's complaint
// about a header length. Torch-free; thread-safe.
#ifndef KENNEL_CORE_FILE_TYPE_H_
#define KENNEL_CORE_FILE_TYPE_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace kennel::core {

enum class FileType {
  kUnknown,
  kEmpty,
  kTorchZip,         // torch.save (PyTorch >= 1.6): zip with <archive>/data.pkl.
  kTorchScript,      // torch.jit.save: zip with <archive>/constants.pkl or code/.
  kAotiPackage,      // torch._inductor.aoti_compile_and_package: zip with <archive>/data/aotinductor/.
  kTorchLegacy,      // torch.save with _use_new_zipfile_serialization=False / PyTorch < 1.6.
  kPickle,           // Some other Python pickle.
  kSafetensors,
  kNumpy,            // .npy
  kZip,              // A zip that is none of the above (.npz among them).
  kHdf5,             // Keras .h5
  kOnnx,
  kGguf,
  kJpeg,
  kPng,
  kGzip,
  kTar,
  kElf,
  kJson,
  kText,
};

// How many leading bytes DetectFileType looks at.
inline constexpr size_t kFileTypeProbeBytes = 4096;

// Classifies a file from (up to) its first kFileTypeProbeBytes bytes.
FileType DetectFileType(absl::string_view head);

// The same for the file at `path`; kUnknown when it cannot be read.
FileType DetectFileTypeOfPath(const std::string& path);

// "a PyTorch zip file (torch.save)", "a JPEG image", ...: a phrase for messages.
std::string DescribeFileType(FileType type);

}  // namespace kennel::core

#endif  // KENNEL_CORE_FILE_TYPE_H_
