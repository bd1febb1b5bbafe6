// The web console behind `kennelctl ui`: an HTTP server on 127.0.0.1 that serves one page
// (HTML, JS, CSS and Chart.js, embedded in the binary at build time) and a read-only JSON API
// the page polls. Every API call is made to the coordinator or an inference node over gRPC with
// the user's own credentials (KENNEL_TLS_*), so the cluster gains no HTTP surface and each view
// obeys the caller's role.
//
// The page's data (GET only):
//   /api/cluster        GetClusterStatus
//   /api/jobs           ListJobs            /api/jobs/ID      GetJob
//   /api/tunings        ListTunings         /api/tunings/ID   GetTuning
//   /api/models         ListModels and GetClusterStatus (where each version is deployed)
//   /api/serving        GetClusterStatus (each inference node's load) and every serving node's
//                       GetServingStats (answers by code, batch sizes)
//   /api/console        this server: its coordinator and the calls it has made, by method
// A failed call answers {"error": {"code", "message", "peer"}} with 503 (unreachable), 403 (the
// caller's role may not), 404 (no such job) or 502 (anything else): the page shows the words.
//
// Safe by construction: it listens on 127.0.0.1 only; a request whose Host header is not the
// address it serves is refused with 403 (DNS rebinding: a web page the user visits cannot read
// it through a name that resolves to 127.0.0.1); anything but GET and HEAD gets 405; no CORS
// headers; a Content-Security-Policy that allows only its own scripts, styles and connections.
#ifndef KENNEL_CLI_CONSOLE_SERVER_H_
#define KENNEL_CLI_CONSOLE_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kennel::cli {

struct ConsoleOptions {
  std::string coordinator;  // host:port
  int port = 7080;          // On 127.0.0.1; 0: any free port.
};

class ConsoleServer {
 public:
  // Listening once it returns. FAILED_PRECONDITION naming the port when it cannot listen there (in
  // use, or not allowed).
  static absl::StatusOr<std::unique_ptr<ConsoleServer>> Start(const ConsoleOptions& options);
  ~ConsoleServer();

  int port() const;
  std::string url() const;  // http://127.0.0.1:PORT/

  class Impl;

 private:
  explicit ConsoleServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The security rules on one request, before any route: 0 when it may go on, else the HTTP
// status to answer (405 for a method other than GET/HEAD, 403 for a Host other than
// 127.0.0.1:PORT or localhost:PORT).
int CheckConsoleRequest(absl::string_view method, absl::string_view host, int port);

// The Content-Security-Policy every answer carries.
extern const char kConsoleContentSecurityPolicy[];

}  // namespace kennel::cli

#endif  // KENNEL_CLI_CONSOLE_SERVER_H_
