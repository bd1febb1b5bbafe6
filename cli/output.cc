#include "cli/output.h"

#include <algorithm>
#include <iostream>

namespace kennel::cli {

int Fail(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  std::cerr << "kennelctl: " << status.message() << "\n";
  switch (status.code()) {
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

void PrintTable(const std::vector<std::string>& headers,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(headers.size());
  for (size_t c = 0; c < headers.size(); ++c) widths[c] = headers[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < widths.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  auto print = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < widths.size(); ++c) {
      std::string cell = c < row.size() ? row[c] : "";
      if (c + 1 < widths.size()) cell.resize(widths[c] + 2, ' ');
      line += cell;
    }
    std::cout << line << "\n";
  };
  print(headers);
  for (const auto& row : rows) print(row);
}

void PrintJson(const nlohmann::json& value) { std::cout << value.dump(2) << "\n"; }

}  // namespace kennel::cli
