// File helpers with the durability rules Kennel relies on: writes are atomic (temp file,
// fsync, rename, fsync of the directory) so a crash leaves either the old or the new file,
// never a torn one.
#ifndef KENNEL_CORE_FILES_H_
#define KENNEL_CORE_FILES_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kennel::core {

// Reads a whole file. Fails with NOT_FOUND if it does not exist and RESOURCE_EXHAUSTED if it
// is larger than max_bytes.
absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     int64_t max_bytes = int64_t{1} << 34);

// The same, for files Kennel keeps (artifacts sent to peers): a symbolic link or anything but
// a regular file is refused with INVALID_ARGUMENT, so nothing outside the store is sent.
absl::StatusOr<std::string> ReadRegularFile(const std::string& path,
                                            int64_t max_bytes = int64_t{1} << 34);

// Reads at most the first `n` bytes of a file (fewer if it is shorter).
absl::StatusOr<std::string> ReadFilePrefix(const std::string& path, size_t n);

// Writes `data` to `path` atomically: a temp file beside it, fsync, rename, fsync of the
// directory.
absl::Status WriteFileAtomic(const std::string& path, absl::string_view data);

// Writes `data` to a new file and fsyncs it (no rename; for files inside a staging folder).
// ALREADY_EXISTS if anything is at `path` (a symbolic link included): never overwrites.
absl::Status WriteFileSynced(const std::string& path, absl::string_view data);

// fsync of a directory, so a rename or create inside it is durable.
absl::Status SyncDirectory(const std::string& dir);

// Lower-case hex SHA-256 of `data` / of a file's contents (streamed).
std::string Sha256Hex(absl::string_view data);
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace kennel::core

#endif  // KENNEL_CORE_FILES_H_
