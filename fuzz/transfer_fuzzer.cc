// The receiving side of artifact transfers (uploads to the coordinator, downloads to trainers
// and inference nodes): any chunk stream gives a complete folder of exactly the announced
// files or an error, never a crash, a file outside the folder, or more bytes than the limit.
//
// Input: chunks, each a 2-byte little-endian length and a serialized kennel.v1.ArtifactChunk.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "core/files.h"
#include "core/member/artifact_transfer.h"
#include "fuzz/seeds.h"

namespace fs = std::filesystem;

namespace {

constexpr int64_t kLimit = 1 << 16;

std::string Frame(const std::vector<kennel::v1::ArtifactChunk>& chunks) {
  std::string out;
  for (const auto& c : chunks) {
    const std::string bytes = c.SerializeAsString();
    out.push_back(static_cast<char>(bytes.size() & 0xff));
    out.push_back(static_cast<char>(bytes.size() >> 8));
    out += bytes;
  }
  return out;
}

std::vector<std::string> Seeds() {
  const fs::path dir = fs::temp_directory_path() / ("transfer-seeds-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  (void)kennel::core::WriteFileSynced((dir / "manifest.json").string(), R"({"name": "fashion"})");
  (void)kennel::core::WriteFileSynced((dir / "weights.safetensors").string(), std::string(300, 'w'));
  (void)kennel::core::WriteFileSynced((dir / "empty").string(), "");
  std::vector<std::string> out;
  for (const auto& files : std::vector<std::vector<std::string>>{
           {"manifest.json", "weights.safetensors"}, {"empty", "manifest.json"}}) {
    kennel::v1::ArtifactRef ref;
    ref.set_kind(kennel::v1::ArtifactRef::MODEL);
    ref.set_name("fashion");
    std::vector<kennel::v1::ArtifactChunk> chunks;
    (void)kennel::core::SendFolder(dir.string(), files, ref, [&](const kennel::v1::ArtifactChunk& c) {
      chunks.push_back(c);
      return true;
    });
    out.push_back(Frame(chunks));
  }
  fs::remove_all(dir);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kennel::fuzz::WriteSeedsIfAsked(Seeds);
  kennel::fuzz::QuietProtobuf();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path base = fs::temp_directory_path() / ("transfer-fuzz-" + std::to_string(::getpid()));
  static int run = 0;
  const fs::path dir = base / std::to_string(run++);
  kennel::core::FolderReceiver receiver(dir.string(), kLimit);
  absl::Status status;
  size_t at = 0;
  while (status.ok() && size - at >= 2) {
    const size_t len = data[at] | (size_t{data[at + 1]} << 8);
    at += 2;
    if (len > size - at) break;
    kennel::v1::ArtifactChunk chunk;
    if (chunk.ParseFromArray(data + at, static_cast<int>(len))) status = receiver.Consume(chunk);
    at += len;
  }
  if (status.ok()) status = receiver.Finish();
  std::error_code ec;
  if (status.ok()) {
    // Exactly the announced files, each its announced size, inside the folder.
    int64_t total = 0, files = 0;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      kennel::fuzz::Check(e.is_regular_file() && !e.is_symlink(), "only regular files arrive");
      total += static_cast<int64_t>(e.file_size());
      ++files;
    }
    kennel::fuzz::Check(files == receiver.header().files_size(), "every announced file arrives once");
    kennel::fuzz::Check(total <= kLimit, "no more bytes than the limit");
  }
  for (const auto& e : fs::directory_iterator(base, ec)) {
    kennel::fuzz::Check(e.path() == dir, "nothing lands outside the receiving folder");
  }
  fs::remove_all(base, ec);
  return 0;
}
