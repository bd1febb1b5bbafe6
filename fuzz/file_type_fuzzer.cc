// What a file is from its first bytes, used to word errors about any file a user passes:
// any bytes give a type and a description, never a crash or an out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/file_type.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view head(reinterpret_cast<const char*>(data), size);
  const auto type = kennel::core::DetectFileType(head);
  if (kennel::core::DescribeFileType(type).empty()) std::abort();
  return 0;
}
