// Runs kennelctl as a process, as users do: its exit code, stdout and stderr.
#ifndef KENNEL_TESTS_TESTING_KENNELCTL_RUN_H_
#define KENNEL_TESTS_TESTING_KENNELCTL_RUN_H_

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "core/files.h"
#include "core/subprocess.h"
#include "core/testing/paths.h"

namespace kennel::testing {

struct CtlRun {
  int code = -1;
  std::string out, err;
  nlohmann::json json() const { return nlohmann::json::parse(out, nullptr, false); }
};

// kennelctl ARGS..., its output kept in `base`.out and `base`.err.
inline CtlRun RunKennelctl(const std::vector<std::string>& args, const std::string& base,
                           absl::Duration timeout = absl::Minutes(3)) {
  std::vector<std::string> argv = {core::testing::BuildDir() + "/cli/kennelctl"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = core::Process::Start(argv, base + ".out", {}, base + ".err");
  EXPECT_TRUE(p.ok()) << p.status();
  CtlRun run;
  if (!p.ok()) return run;
  auto code = (*p)->Wait(timeout);
  EXPECT_TRUE(code.ok()) << code.status();
  run.code = code.ok() ? *code : -1;
  run.out = *core::ReadFile(base + ".out");
  run.err = *core::ReadFile(base + ".err");
  return run;
}

}  // namespace kennel::testing

#endif  // KENNEL_TESTS_TESTING_KENNELCTL_RUN_H_
