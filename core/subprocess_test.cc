#include "core/subprocess.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "absl/time/time.h"

namespace kennel::core {
namespace {

std::string TempFile(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / name).string();
}

TEST(SubprocessTest, WaitForLineNeverReadsWhatAnEarlierProcessLeftInTheLog) {
  // A re-run of `kennelctl up` with the same data dir: the old log names another port.
  const std::string log = TempFile("subprocess-stale.log");
  std::ofstream(log) << "listening on port 1111\n";
  auto p = Process::Start({"/bin/sh", "-c", "sleep 0.2; echo listening on port 2222; sleep 5"}, log);
  ASSERT_TRUE(p.ok()) << p.status();
  auto line = (*p)->WaitForLine("listening on port ", absl::Seconds(10));
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(*line, "listening on port 2222");
}

TEST(SubprocessTest, EnvironmentEntriesAddToAndReplaceTheInheritedOnes) {
  ::setenv("KENNEL_SUBPROCESS_INHERITED", "parent", 1);
  ::setenv("KENNEL_SUBPROCESS_REPLACED", "parent", 1);
  const std::string log = TempFile("subprocess-env.log");
  auto p = Process::Start({"/bin/sh", "-c",
                           "echo $KENNEL_SUBPROCESS_INHERITED $KENNEL_SUBPROCESS_REPLACED $KENNEL_SUBPROCESS_ADDED"},
                          log, {"KENNEL_SUBPROCESS_REPLACED=child", "KENNEL_SUBPROCESS_ADDED=new"});
  ASSERT_TRUE(p.ok()) << p.status();
  auto status = (*p)->Wait(absl::Seconds(10));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, 0);
  EXPECT_EQ((*p)->Log(), "parent child new\n");
}

TEST(SubprocessTest, ExitStatusSignalsAndUnwritableLogs) {
  const std::string log = TempFile("subprocess-exit.log");
  auto p = Process::Start({"/bin/sh", "-c", "exit 3"}, log);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*(*p)->Wait(absl::Seconds(10)), 3);
  p = Process::Start({"/bin/sleep", "30"}, log);
  ASSERT_TRUE(p.ok());
  (*p)->Signal(SIGTERM);
  EXPECT_EQ(*(*p)->Wait(absl::Seconds(10)), 128 + SIGTERM);
  auto bad = Process::Start({"/bin/true"}, "/nonexistent-dir/x.log");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(bad.status().message().find("/nonexistent-dir/x.log"), std::string::npos);
}

}  // namespace
}  // namespace kennel::core
