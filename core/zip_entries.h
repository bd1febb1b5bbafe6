// The entries of a zip archive, read from its central directory (ZIP64 too), without
// trusting what it declares: every offset and size is checked against the archive's own size
// before anything is read or allocated. PyTorch's archives (torch.save, torch.jit.save, .pt2
// packages) store their records uncompressed, so a stored entry's bytes can be read in place.
// Torch-free; the readers of weights and AOTInductor packages check archives with it before
// LibTorch's own reader sees them.
#ifndef KENNEL_CORE_ZIP_ENTRIES_H_
#define KENNEL_CORE_ZIP_ENTRIES_H_

#include <cstdint>
#include <functional>
#include <istream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kennel::core {

// Reads `len` bytes at `offset` of the archive into `out`; false if it cannot.
using ZipRead = std::function<bool(uint64_t offset, uint64_t len, std::string* out)>;

// A ZipRead over bytes in memory, or over an open file; either must outlive it.
ZipRead ZipReadFromBytes(absl::string_view bytes);
ZipRead ZipReadFromStream(std::istream& in);

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0: stored.
  uint64_t compressed = 0;
  uint64_t uncompressed = 0;
  uint64_t local_header = 0;  // Offset of its local file header.
};

// The entries of the `size`-byte archive `read` reads, in the central directory's order.
// INVALID_ARGUMENT saying what is wrong (no "is not a zip" prefix: callers name the file and
// what they expected it to be) for anything that is not a well-formed zip, or an entry whose
// declared size or offset lies beyond the archive.
absl::StatusOr<std::vector<ZipEntry>> ListZipEntries(const ZipRead& read, uint64_t size);

// A stored (uncompressed) entry's bytes, at most `limit` of them. INVALID_ARGUMENT for a
// compressed entry, one larger than `limit`, or a local header that disagrees with the
// archive.
absl::StatusOr<std::string> ReadStoredZipEntry(const ZipRead& read, uint64_t size, const ZipEntry& entry,
                                               uint64_t limit);

}  // namespace kennel::core

#endif  // KENNEL_CORE_ZIP_ENTRIES_H_
