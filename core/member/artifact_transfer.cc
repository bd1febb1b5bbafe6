#include "core/member/artifact_transfer.h"

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/status_macros.h"

namespace kennel::core {

absl::Status SendFolder(const std::string& dir, const std::vector<std::string>& files,
                        const kennel::v1::ArtifactRef& ref,
                        const std::function<bool(const kennel::v1::ArtifactChunk&)>& write) {
  kennel::v1::ArtifactChunk header;
  *header.mutable_header()->mutable_ref() = ref;
  std::vector<std::string> contents;
  for (const auto& name : files) {
    ASSIGN_OR_RETURN(std::string bytes, ReadRegularFile(dir + "/" + name));
    auto* entry = header.mutable_header()->add_files();
    entry->set_name(name);
    entry->set_size(static_cast<int64_t>(bytes.size()));
    entry->set_sha256(Sha256Hex(bytes));
    contents.push_back(std::move(bytes));
  }
  if (!write(header)) return absl::UnavailableError("transfer peer went away");
  for (const auto& bytes : contents) {
    for (size_t at = 0; at < bytes.size(); at += kTransferChunkBytes) {
      kennel::v1::ArtifactChunk chunk;
      chunk.set_data(bytes.substr(at, kTransferChunkBytes));
      if (!write(chunk)) return absl::UnavailableError("transfer peer went away");
    }
  }
  return absl::OkStatus();
}

absl::Status FolderReceiver::Consume(const kennel::v1::ArtifactChunk& chunk) {
  if (!have_header_) {
    if (!chunk.has_header()) return absl::InvalidArgumentError("transfer must start with a header");
    header_ = chunk.header();
    have_header_ = true;
    int64_t total = 0;
    std::set<std::string> names;
    if (header_.files_size() == 0 || header_.files_size() > 64) {
      return absl::InvalidArgumentError("transfer must hold 1 to 64 files");
    }
    for (const auto& f : header_.files()) {
      if (f.name().empty() || f.name().size() > 255 || f.name().find('/') != std::string::npos ||
          f.name().find('\0') != std::string::npos || f.name() == "." || f.name() == ".." ||
          f.size() < 0) {
        return absl::InvalidArgumentError(absl::StrCat("bad file entry '", f.name(), "'"));
      }
      if (!names.insert(f.name()).second) {
        return absl::InvalidArgumentError(absl::StrCat("file '", f.name(), "' announced twice"));
      }
      // (Checked one file at a time: a sum of announced sizes could overflow.)
      if (f.size() > max_total_bytes_ - total) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "transfer exceeds the limit of ", max_total_bytes_, " bytes (", total, " before file '",
            f.name(), "' of ", f.size(), ")"));
      }
      total += f.size();
    }
    std::error_code ec;
    if (!std::filesystem::create_directories(dir_, ec)) {
      return absl::InternalError(absl::StrCat("cannot create ", dir_, ": ", ec.message()));
    }
    // Zero-length files complete at once.
    while (file_ < header_.files_size() && header_.files(file_).size() == 0) RETURN_IF_ERROR(FinishFile());
    return absl::OkStatus();
  }
  if (chunk.has_header()) return absl::InvalidArgumentError("a second header in one transfer");
  absl::string_view data = chunk.data();
  while (!data.empty()) {
    if (file_ >= header_.files_size()) return absl::InvalidArgumentError("more data than announced");
    const auto& f = header_.files(file_);
    const size_t take = std::min<size_t>(data.size(), static_cast<size_t>(f.size()) - buffer_.size());
    buffer_.append(data.data(), take);
    data.remove_prefix(take);
    if (static_cast<int64_t>(buffer_.size()) == f.size()) {
      RETURN_IF_ERROR(FinishFile());
      while (file_ < header_.files_size() && header_.files(file_).size() == 0) RETURN_IF_ERROR(FinishFile());
    }
  }
  return absl::OkStatus();
}

absl::Status FolderReceiver::FinishFile() {
  const auto& f = header_.files(file_);
  if (Sha256Hex(buffer_) != f.sha256()) {
    return absl::DataLossError(absl::StrCat("file ", f.name(), " arrived corrupt (SHA-256 mismatch)"));
  }
  RETURN_IF_ERROR(WriteFileSynced(dir_ + "/" + f.name(), buffer_));
  buffer_.clear();
  ++file_;
  return absl::OkStatus();
}

absl::Status FolderReceiver::Finish() {
  if (!have_header_) return absl::InvalidArgumentError("empty transfer");
  if (file_ != header_.files_size()) {
    return absl::DataLossError(absl::StrCat("transfer ended early: ", file_, " of ",
                                            header_.files_size(), " files complete"));
  }
  return SyncDirectory(dir_);
}

}  // namespace kennel::core
