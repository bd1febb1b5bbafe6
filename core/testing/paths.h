// Where tests find generated reference files (see tests/fixtures/) and the built binaries.
#ifndef KENNEL_CORE_TESTING_PATHS_H_
#define KENNEL_CORE_TESTING_PATHS_H_

#include <cstdlib>
#include <string>

namespace kennel::core::testing {

// Folder filled by tests/fixtures/make_torchvision_fixtures.py (ctest fixture "torchvision").
inline std::string FixtureDir() {
  const char* dir = std::getenv("KENNEL_FIXTURE_DIR");
  return dir != nullptr ? dir : "testdata";
}

// The build tree whose binaries cross-process tests start (KENNEL_BUILD_DIR, set by CMake).
inline std::string BuildDir() {
  const char* dir = std::getenv("KENNEL_BUILD_DIR");
  return dir != nullptr ? dir : ".";
}

}  // namespace kennel::core::testing

#endif  // KENNEL_CORE_TESTING_PATHS_H_
