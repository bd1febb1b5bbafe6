// Where tests find generated reference files (see tests/fixtures/) and the built binaries.
#ifndef KENNEL_CORE_TESTING_PATHS_H_
#define KENNEL_CORE_TESTING_PATHS_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace kennel::core::testing {

// Folder filled by tests/fixtures/make_torchvision_fixtures.py (ctest fixture "torchvision").
inline std::string FixtureDir() {
  const char* dir = std::getenv("KENNEL_FIXTURE_DIR");
  return dir != nullptr ? dir : "testdata";
}

// A file made by tests/fixtures/make_torch2_fixtures.py, where a Python with PyTorch 2.x is
// configured (the torch2 build's, or deploy/bootstrap.sh's virtual environment); "" where none
// was, and the test skips.
inline std::string Torch2Fixture(const std::string& name) {
  const std::string path = FixtureDir() + "/" + name;
  return std::filesystem::exists(path) ? path : "";
}

// A folder path for the running test's output, unique to its name and process (ctest runs
// the same test binary twice at once under different filters), and not there yet.
inline std::string NewTestOutputDir() {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) /
      (std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
       std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

// The build tree whose binaries cross-process tests start (KENNEL_BUILD_DIR, set by CMake).
inline std::string BuildDir() {
  const char* dir = std::getenv("KENNEL_BUILD_DIR");
  return dir != nullptr ? dir : ".";
}

}  // namespace kennel::core::testing

#endif  // KENNEL_CORE_TESTING_PATHS_H_
