// Client-side helpers for talking to a coordinator, shared by trainers, inference nodes and
// kennelctl: channel creation with Kennel's message limits, and chunked artifact upload and
// download over the Coordinator service's stubs.
#ifndef KENNEL_CORE_MEMBER_COORDINATOR_CLIENT_H_
#define KENNEL_CORE_MEMBER_COORDINATOR_CLIENT_H_

#include <grpcpp/channel.h>
#include <grpcpp/security/credentials.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kennel/v1/coordinator.grpc.pb.h"

namespace kennel::core {

// A channel to the coordinator accepting messages up to 256 MiB, with keepalives.
// `credentials`: core::MakeChannelCredentials (TLS with the cluster's CA), plaintext if null.
std::shared_ptr<grpc::Channel> CreateCoordinatorChannel(const std::string& address,
                                                        std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

// A member's --coordinator, checked before it starts waiting for the coordinator:
// INVALID_ARGUMENT, saying what to fix, when it is not HOST:PORT or when the host's name does
// not exist (a typo would otherwise wait forever, silently). OK when the name resolves, when
// DNS does not answer now (the member keeps trying), and for gRPC target URIs ("dns:///...",
// "unix:..."), which gRPC itself checks. Blocks for one name lookup.
absl::Status CheckCoordinatorAddress(const std::string& address);

// Uploads `files` from `dir`; returns the reference the coordinator stored (with the model
// version it assigned).
absl::StatusOr<kennel::v1::ArtifactRef> UploadFolder(kennel::v1::Coordinator::StubInterface& stub,
                                                     const std::string& dir,
                                                     const std::vector<std::string>& files,
                                                     const kennel::v1::ArtifactRef& ref,
                                                     absl::Duration timeout);

// Downloads an artifact into `dir` (which must not exist; filled atomically: nothing is left
// at `dir` unless every file arrived intact). Returns the header's reference.
absl::StatusOr<kennel::v1::ArtifactRef> DownloadFolder(kennel::v1::Coordinator::StubInterface& stub,
                                                       const kennel::v1::ArtifactRef& ref,
                                                       const std::string& dir, absl::Duration timeout);

}  // namespace kennel::core

#endif  // KENNEL_CORE_MEMBER_COORDINATOR_CLIENT_H_
