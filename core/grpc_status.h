// The one place where absl::Status and grpc::Status meet. Services return absl::Status from
// their logic and convert at the gRPC edge with ToGrpcStatus; clients convert back with
// FromGrpcStatus.
#ifndef KENNEL_CORE_GRPC_STATUS_H_
#define KENNEL_CORE_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kennel::core {

// Same code, same message. Status payloads are not carried.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// A unary handler's ending: an OK result is moved into `*response`, a failed one becomes the
// call's status.
template <typename T>
grpc::Status RespondWith(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace kennel::core

#endif  // KENNEL_CORE_GRPC_STATUS_H_
