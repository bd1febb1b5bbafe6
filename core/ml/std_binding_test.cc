// PyTorch 2.x's libtorch.so exports copies of std::filesystem functions. A Kennel binary that
// bound its own std::filesystem calls to them crashed (SIGSEGV in remove_all / create_directories:
// a trainer died writing its first checkpoint). Kennel links libstdc++ ahead of LibTorch
// (core/CMakeLists.txt); these tests fail, or crash, when that order is lost.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace kennel::core {
namespace {
namespace fs = std::filesystem;

std::string LibraryDefining(const void* address) {
  Dl_info info{};
  if (dladdr(address, &info) == 0 || info.dli_fname == nullptr) return "(unknown)";
  return info.dli_fname;
}

TEST(StdBindingTest, FilesystemCallsBindToTheStandardLibraryNotLibTorch) {
  // The address a call goes to, as the dynamic linker bound it for this binary.
  const auto remove_all = static_cast<std::uintmax_t (*)(const fs::path&)>(&fs::remove_all);
  const auto create_directories = static_cast<bool (*)(const fs::path&)>(&fs::create_directories);
  EXPECT_NE(LibraryDefining(reinterpret_cast<const void*>(remove_all)).find("libstdc++"), std::string::npos)
      << LibraryDefining(reinterpret_cast<const void*>(remove_all));
  EXPECT_NE(LibraryDefining(reinterpret_cast<const void*>(create_directories)).find("libstdc++"), std::string::npos)
      << LibraryDefining(reinterpret_cast<const void*>(create_directories));
  // LibTorch is really loaded in this process (the test is not vacuous).
  EXPECT_EQ(torch::ones({2}).sum().item<float>(), 2.0f);
}

TEST(StdBindingTest, CreateAndRemoveADirectoryTreeWithLibTorchLoaded) {
  const fs::path root = fs::path(::testing::TempDir()) / "std-binding" / "a" / "b";
  fs::remove_all(root.parent_path().parent_path());
  ASSERT_TRUE(fs::create_directories(root));
  std::ofstream(root / "file.txt") << "x";
  EXPECT_EQ(fs::remove_all(root.parent_path().parent_path()), 4u);  // std-binding, a, b, file.txt
  EXPECT_FALSE(fs::exists(root));
  EXPECT_EQ(torch::zeros({3}).numel(), 3);
}

}  // namespace
}  // namespace kennel::core
