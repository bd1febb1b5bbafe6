#include "cli/output.h"

#include <algorithm>
#include <google/protobuf/util/json_util.h>

#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kennel::cli {

void AddGlobalFlags(CLI::App& app, GlobalOptions& global) {
  app.add_option("-o,--output", global.output, "Output format: table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str()
      ->group("Global options");
  app.add_option("-c,--coordinator", global.coordinator,
                 "Coordinator host:port (default: $KENNEL_COORDINATOR or 127.0.0.1:7070)")
      ->capture_default_str()
      ->group("Global options");
}

int Fail(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  std::cerr << "kennelctl: " << status.message() << "\n";
  return ExitCodeFor(status);
}

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return kExitUsage;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    default:
      return kExitFailed;
  }
}

std::vector<std::string> FormatTable(const std::vector<std::string>& headers,
                                     const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(headers.size());
  for (size_t c = 0; c < headers.size(); ++c) widths[c] = headers[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < widths.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  std::vector<std::string> lines;
  auto format = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < widths.size(); ++c) {
      std::string cell = c < row.size() ? row[c] : "";
      if (c + 1 < widths.size()) cell.resize(widths[c] + 2, ' ');
      line += cell;
    }
    lines.push_back(std::move(line));
  };
  format(headers);
  for (const auto& row : rows) format(row);
  return lines;
}

void PrintTable(const std::vector<std::string>& headers,
                const std::vector<std::vector<std::string>>& rows) {
  for (const auto& line : FormatTable(headers, rows)) std::cout << line << "\n";
}

void PrintJson(const nlohmann::json& value) { std::cout << value.dump(2) << "\n"; }

nlohmann::json ProtoToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    // Not expected for Kennel's messages; say so rather than print nothing.
    return nlohmann::json{{"error", absl::StrCat("cannot print ", message.GetTypeName(), " as JSON: ",
                                                 status.message().as_string())}};
  }
  return nlohmann::json::parse(json);
}

std::string Lower(const std::string& s) { return absl::AsciiStrToLower(s); }

std::string Ago(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  const int64_t s = (absl::ToUnixMillis(absl::Now()) - unix_ms) / 1000;
  if (s < 120) return absl::StrCat(std::max<int64_t>(s, 0), "s ago");
  if (s < 7200) return absl::StrCat(s / 60, "m ago");
  return absl::StrCat(s / 3600, "h ago");
}

}  // namespace kennel::cli
