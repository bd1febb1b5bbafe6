// Little-endian integers in byte strings (zip, safetensors and checkpoint headers), read byte
// by byte so neither alignment nor the host's order matters.
#ifndef KENNEL_CORE_BYTE_ORDER_H_
#define KENNEL_CORE_BYTE_ORDER_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace kennel::core {

// The `bytes`-byte (at most 8) little-endian unsigned integer at `at`; the caller checks that
// b holds at + bytes bytes.
inline uint64_t LoadLittleEndian(absl::string_view b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[at + static_cast<size_t>(i)]);
  return v;
}

}  // namespace kennel::core

#endif  // KENNEL_CORE_BYTE_ORDER_H_
