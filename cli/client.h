// How kennelctl reaches the coordinator: --coordinator, else $KENNEL_COORDINATOR, else
// 127.0.0.1:7070.
#ifndef KENNEL_CLI_CLIENT_H_
#define KENNEL_CLI_CLIENT_H_

#include <chrono>
#include <memory>
#include <string>

#include "kennel/v1/admin.grpc.pb.h"
#include "kennel/v1/coordinator.grpc.pb.h"

namespace kennel::cli {

std::string DefaultCoordinator();
std::unique_ptr<kennel::v1::Admin::Stub> AdminStub(const std::string& address);
std::unique_ptr<kennel::v1::Coordinator::Stub> CoordinatorStub(const std::string& address);
// A context with a deadline `seconds` from now.
std::unique_ptr<grpc::ClientContext> Context(int seconds = 30);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_CLIENT_H_
