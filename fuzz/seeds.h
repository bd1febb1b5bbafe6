// Seed inputs for a fuzz target's corpus, written on request: with KENNEL_FUZZ_WRITE_SEEDS=DIR
// the target writes `make()`'s inputs to DIR/seed-<n> and exits instead of fuzzing. Called
// from LLVMFuzzerInitialize.
#ifndef KENNEL_FUZZ_SEEDS_H_
#define KENNEL_FUZZ_SEEDS_H_

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

namespace kennel::fuzz {

inline void WriteSeedsIfAsked(const std::function<std::vector<std::string>()>& make) {
  const char* dir = std::getenv("KENNEL_FUZZ_WRITE_SEEDS");
  if (dir == nullptr || *dir == '\0') return;
  std::filesystem::create_directories(dir);
  const std::vector<std::string> seeds = make();
  for (size_t i = 0; i < seeds.size(); ++i) {
    std::ofstream(std::filesystem::path(dir) / ("seed-" + std::to_string(i)), std::ios::binary)
        << seeds[i];
  }
  std::fprintf(stderr, "wrote %zu seeds to %s\n", seeds.size(), dir);
  std::exit(0);
}

// Protobuf logs every string field with invalid UTF-8 it parses: fuzzed messages are full
// of them, and the log would drown libFuzzer's own.
inline void QuietProtobuf() {
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string&) {});
}

// Aborts (a finding) when `ok` is false: the invariant a target checks beyond "no crash".
inline void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace kennel::fuzz

#endif  // KENNEL_FUZZ_SEEDS_H_
