// HTTP/2 keepalive on every Kennel channel and server. Without it a connection whose peer
// vanished without a FIN or RST (a cut link, a frozen VM, a security group change) looks
// open until TCP gives up (~15 minutes): a member would not notice its coordinator was gone,
// and a client would keep sending to an unreachable inference node until each call's
// deadline. With it such a connection is declared dead within kKeepaliveTime +
// kKeepaliveTimeout, its calls fail with UNAVAILABLE (retried elsewhere where that is safe)
// and the channel reconnects.
#ifndef KENNEL_CORE_GRPC_KEEPALIVE_H_
#define KENNEL_CORE_GRPC_KEEPALIVE_H_

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/channel_arguments.h>

namespace kennel::core {

inline constexpr int kKeepaliveTimeMs = 10'000;
inline constexpr int kKeepaliveTimeoutMs = 5'000;

// Pings the server after kKeepaliveTimeMs without traffic, idle or not.
void SetClientKeepalive(grpc::ChannelArguments& args);
// Accepts those pings (gRPC's default policy would answer them with GOAWAY "too many pings")
// and pings its clients the same way.
void SetServerKeepalive(grpc::ServerBuilder& builder);

}  // namespace kennel::core

#endif  // KENNEL_CORE_GRPC_KEEPALIVE_H_
