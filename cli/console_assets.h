// The console's files (cli/console/ and Chart.js from Debian's libjs-chart.js), compiled into
// kennelctl by cmake/EmbedFiles.cmake: the page loads nothing from anywhere else.
#ifndef KENNEL_CLI_CONSOLE_ASSETS_H_
#define KENNEL_CLI_CONSOLE_ASSETS_H_

#include <cstddef>
#include <string_view>

namespace kennel::cli {

struct ConsoleAsset {
  const char* path;  // "/index.html"
  const char* content_type;
  const unsigned char* data;
  size_t size;
};

// The file served at `path`; nullptr when there is none.
const ConsoleAsset* FindConsoleAsset(std::string_view path);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_CONSOLE_ASSETS_H_
