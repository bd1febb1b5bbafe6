// What every kennelctl command shares: the global flags, tables for people, JSON for scripts,
// and the exit codes.
#ifndef KENNEL_CLI_OUTPUT_H_
#define KENNEL_CLI_OUTPUT_H_

#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <google/protobuf/message.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace kennel::cli {

// Exit codes (README "Exit codes"; cli_test checks them):
//   0  success
//   1  the operation failed (a server-side error, or some requests failed)
//   2  bad usage or input: flags, files, a spec the coordinator refused, an image a node
//      rejected, an address that is not the kind of server the command needs
//   3  the coordinator or inference node could not be reached or did not answer in time
//   4  the job ended in failure or was cancelled
enum ExitCode { kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitUnavailable = 3, kExitJobFailed = 4 };

struct GlobalOptions {
  std::string output = "table";  // "table" or "json".
  std::string coordinator;       // host:port of the coordinator.
  bool json() const { return output == "json"; }
};

// -o/--output and -c/--coordinator on `app`: called for kennelctl itself and for every
// subcommand, so the flags work before or after the command and show in every --help.
void AddGlobalFlags(CLI::App& app, GlobalOptions& global);

// A proto message as JSON (proto3 field names, zero values and empty fields included, so a
// script reading `class_index` finds 0 rather than nothing).
nlohmann::json ProtoToJson(const google::protobuf::Message& message);

// A proto enum value's name as tables show it: lower case ("RUNNING" -> "running").
std::string Lower(const std::string& s);

// "12s ago" / "3m ago" for a unix-millisecond timestamp; "-" for 0.
std::string Ago(int64_t unix_ms);

// The exit code for a status (see ExitCode).
int ExitCodeFor(const absl::Status& status);

// Prints "kennelctl: <message>" on stderr when not OK; returns ExitCodeFor(status).
int Fail(const absl::Status& status);

// Rows aligned under headers, one string per line (headers first).
std::vector<std::string> FormatTable(const std::vector<std::string>& headers,
                                     const std::vector<std::vector<std::string>>& rows);
// Prints rows aligned under headers.
void PrintTable(const std::vector<std::string>& headers,
                const std::vector<std::vector<std::string>>& rows);

void PrintJson(const nlohmann::json& value);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_OUTPUT_H_
