// Who may call what. With TLS every caller holds a certificate from the cluster's CA, and its
// role rides in the certificate (the subject's organizational unit, set by `kennelctl certs
// issue --role`):
//   member  trainers and inference nodes: the control stream, the rendezvous store, artifacts;
//   admin   people and scripts that drive the cluster: everything below, plus train, cancel,
//           resume, deploy, import (an upload);
//   viewer  status, jobs, models, model info, serving statistics;
//   client  classification (and model info).
// Every RPC of every service is checked here, against one table. Without TLS (plaintext on the
// loopback) there are no identities, and every call is allowed.
#ifndef KENNEL_CORE_AUTH_H_
#define KENNEL_CORE_AUTH_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <string>

#include "absl/strings/string_view.h"

namespace kennel::core {

inline constexpr const char* kRoles[] = {"member", "admin", "viewer", "client"};

struct Caller {
  std::string name;  // The certificate's common name; "anonymous" without TLS.
  std::string role;  // One of kRoles, "" when the certificate carries none; "any" without TLS.
};

// The caller of `context`'s call; with `enforce` false (no TLS), anonymous with every role.
Caller CallerOf(const grpc::ServerContextBase& context, bool enforce);

// OK when the caller may call `method` (its short name, e.g. "SubmitJob"); otherwise
// PERMISSION_DENIED naming the caller, its role and the roles the method needs.
grpc::Status Authorize(const grpc::ServerContextBase& context, bool enforce, absl::string_view method);

}  // namespace kennel::core

#endif  // KENNEL_CORE_AUTH_H_
