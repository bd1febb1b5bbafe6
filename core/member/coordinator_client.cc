#include "core/member/coordinator_client.h"

#include <grpcpp/create_channel.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/member/artifact_transfer.h"
#include "core/files.h"
#include "core/grpc_keepalive.h"
#include "core/grpc_status.h"
#include "core/status_macros.h"

namespace kennel::core {

absl::Status CheckCoordinatorAddress(const std::string& address) {
  if (address.find("://") != std::string::npos || absl::StartsWith(address, "unix:")) return absl::OkStatus();
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--coordinator must be HOST:PORT (e.g. 10.0.0.5:7070), got \"", address, "\""));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (found != nullptr) ::freeaddrinfo(found);
  if (rc == EAI_NONAME || rc == EAI_FAIL) {
    return absl::InvalidArgumentError(absl::StrCat("--coordinator ", address, ": no host is named \"", host, "\" (",
                                                   ::gai_strerror(rc), "); give the coordinator's address, or a "
                                                   "name this machine resolves"));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> CreateCoordinatorChannel(const std::string& address,
                                                        std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  // Reconnect quickly after a coordinator restart.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  SetClientKeepalive(args);
  return grpc::CreateCustomChannel(address, credentials ? credentials : grpc::InsecureChannelCredentials(), args);
}

absl::StatusOr<v1::ArtifactRef> UploadFolder(v1::Coordinator::StubInterface& stub, const std::string& dir,
                                             const std::vector<std::string>& files,
                                             const v1::ArtifactRef& ref, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  v1::UploadArtifactResponse response;
  auto writer = stub.UploadArtifact(&context, &response);
  absl::Status sent = SendFolder(dir, files, ref, [&](const v1::ArtifactChunk& c) { return writer->Write(c); });
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) return FromGrpcStatus(status);
  RETURN_IF_ERROR(sent);
  return response.stored();
}

absl::StatusOr<v1::ArtifactRef> DownloadFolder(v1::Coordinator::StubInterface& stub,
                                               const v1::ArtifactRef& ref, const std::string& dir,
                                               absl::Duration timeout) {
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(dir, " already exists"));
  }
  const std::string partial = absl::StrCat(dir, ".partial-", ::getpid(), "-", std::random_device()());
  FolderReceiver receiver(partial, int64_t{16} << 30);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  v1::DownloadArtifactRequest request;
  *request.mutable_ref() = ref;
  auto reader = stub.DownloadArtifact(&context, request);
  v1::ArtifactChunk chunk;
  absl::Status status;
  while (status.ok() && reader->Read(&chunk)) status = receiver.Consume(chunk);
  if (!status.ok()) context.TryCancel();
  const grpc::Status rpc = reader->Finish();
  if (status.ok() && !rpc.ok()) status = FromGrpcStatus(rpc);
  if (status.ok()) status = receiver.Finish();
  if (status.ok() && ::rename(partial.c_str(), dir.c_str()) != 0) {
    status = absl::InternalError(absl::StrCat("rename to ", dir, ": ", std::strerror(errno)));
  }
  if (!status.ok()) {
    std::filesystem::remove_all(partial, ec);
    return status;
  }
  return receiver.header().ref();
}

}  // namespace kennel::core
