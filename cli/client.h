// How kennelctl reaches the cluster: the coordinator (--coordinator, else $KENNEL_COORDINATOR,
// else 127.0.0.1:7070) and inference nodes (--server), and what a failed call means in the
// user's terms.
#ifndef KENNEL_CLI_CLIENT_H_
#define KENNEL_CLI_CLIENT_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/subprocess.h"
#include "absl/strings/string_view.h"
#include "kennel/v1/admin.grpc.pb.h"
#include "kennel/v1/coordinator.grpc.pb.h"

namespace kennel::cli {

std::string DefaultCoordinator();
std::unique_ptr<kennel::v1::Admin::Stub> AdminStub(const std::string& address);
std::unique_ptr<kennel::v1::Coordinator::Stub> CoordinatorStub(const std::string& address);
// A context with a deadline `seconds` from now.
std::unique_ptr<grpc::ClientContext> Context(int seconds = 30);

// A Kennel binary next to kennelctl (installed together) or, in a build tree, in
// ../<build_folder>/. NOT_FOUND naming both places.
using core::FindKennelBinary;

// Which kind of server a call was for, to name it in errors.
enum class Peer { kCoordinator, kInferenceNode };

// A failed call to `peer` at `address` as a status whose message says what happened:
// UNAVAILABLE "cannot reach the coordinator at ADDR: ...", DEADLINE_EXCEEDED "... did not
// answer in time", FAILED_PRECONDITION "ADDR is not a Kennel coordinator ..." when the server
// does not implement the service (an easy mix-up of addresses); other codes keep their
// message, prefixed with the peer.
absl::Status RpcError(const grpc::Status& status, Peer peer, absl::string_view address);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_CLIENT_H_
