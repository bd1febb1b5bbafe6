// Output helpers shared by kennelctl commands: tables for people, JSON for scripts, and the
// exit codes every command uses.
#ifndef KENNEL_CLI_OUTPUT_H_
#define KENNEL_CLI_OUTPUT_H_

#include <string>
#include <vector>

#include <google/protobuf/message.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace kennel::cli {

// Exit codes: 0 success, 1 the operation failed, 2 bad usage or input, 3 the cluster is
// unreachable, 4 a job ended in failure or was cancelled.
enum ExitCode { kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitUnavailable = 3, kExitJobFailed = 4 };

struct GlobalOptions {
  std::string output = "table";  // "table" or "json".
  std::string coordinator;       // host:port of the coordinator.
  bool json() const { return output == "json"; }
};

// A proto message as JSON (proto3 field names).
nlohmann::json ProtoToJson(const google::protobuf::Message& message);

// "12s ago" / "3m ago" for a unix-millisecond timestamp; "-" for 0.
std::string Ago(int64_t unix_ms);

// Maps a status to an exit code and prints "kennelctl: <message>" on stderr when not OK.
int Fail(const absl::Status& status);

// Prints rows aligned under headers.
void PrintTable(const std::vector<std::string>& headers,
                const std::vector<std::vector<std::string>>& rows);

void PrintJson(const nlohmann::json& value);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_OUTPUT_H_
