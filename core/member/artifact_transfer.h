// Chunked transfer of a folder of files (model artifacts, checkpoints) as a stream of
// kennel.v1.ArtifactChunk: one header listing every file with its size and SHA-256, then
// the files' bytes in order. Transport-agnostic: gRPC adapters feed and drain these.
#ifndef KENNEL_CORE_MEMBER_ARTIFACT_TRANSFER_H_
#define KENNEL_CORE_MEMBER_ARTIFACT_TRANSFER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kennel/v1/artifact.pb.h"

namespace kennel::core {

inline constexpr int64_t kTransferChunkBytes = 1 << 20;

// Streams `files` (names inside `dir`) with `ref` in the header. `write` returns false when
// the peer has gone (then UNAVAILABLE).
absl::Status SendFolder(const std::string& dir, const std::vector<std::string>& files,
                        const kennel::v1::ArtifactRef& ref,
                        const std::function<bool(const kennel::v1::ArtifactChunk&)>& write);

// Receives a transfer into `dir` (created; must not exist). Consume each chunk in order,
// then Finish: every file must be complete with its announced SHA-256. On any error the
// caller removes `dir`. Not thread-safe.
class FolderReceiver {
 public:
  FolderReceiver(std::string dir, int64_t max_total_bytes)
      : dir_(std::move(dir)), max_total_bytes_(max_total_bytes) {}
  absl::Status Consume(const kennel::v1::ArtifactChunk& chunk);
  absl::Status Finish();
  const kennel::v1::ArtifactHeader& header() const { return header_; }
  const std::string& dir() const { return dir_; }

 private:
  absl::Status FinishFile();

  std::string dir_;
  int64_t max_total_bytes_;
  bool have_header_ = false;
  kennel::v1::ArtifactHeader header_;
  int file_ = 0;
  std::string buffer_;  // The current file's bytes so far.
};

}  // namespace kennel::core

#endif  // KENNEL_CORE_MEMBER_ARTIFACT_TRANSFER_H_
