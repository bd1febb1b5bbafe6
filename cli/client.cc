#include "cli/client.h"

#include <cstdlib>

#include "core/coordinator_client.h"

namespace kennel::cli {

std::string DefaultCoordinator() {
  const char* env = std::getenv("KENNEL_COORDINATOR");
  return env != nullptr && *env != '\0' ? env : "127.0.0.1:7070";
}

std::unique_ptr<kennel::v1::Admin::Stub> AdminStub(const std::string& address) {
  return kennel::v1::Admin::NewStub(core::CreateCoordinatorChannel(address));
}

std::unique_ptr<kennel::v1::Coordinator::Stub> CoordinatorStub(const std::string& address) {
  return kennel::v1::Coordinator::NewStub(core::CreateCoordinatorChannel(address));
}

std::unique_ptr<grpc::ClientContext> Context(int seconds) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return context;
}

}  // namespace kennel::cli
