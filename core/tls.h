// TLS for Kennel's gRPC channels and servers, and a small certificate authority.
//
// Every member (trainer, inference node), the coordinator, and every person or script that
// uses the cluster hold a certificate issued by the cluster's CA. With TLS on, servers accept
// only clients with such a certificate (mutual TLS), and a member registers only under the name
// its certificate carries (so no one registers as, or evicts, a member they are not).
#ifndef KENNEL_CORE_TLS_H_
#define KENNEL_CORE_TLS_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kennel::core {

// PEM files. All empty: plaintext. A server needs cert and key (and ca to verify clients); a
// client needs ca (and cert and key to prove who it is).
struct TlsFiles {
  std::string ca;
  std::string cert;
  std::string key;
  bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

// Server credentials: TLS with `files`, or plaintext when none are given. With files.ca, every
// client must present a certificate the CA issued (the handshake refuses anyone else, before
// any call). INVALID_ARGUMENT naming a file that is missing or not PEM of the right kind.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& files);
// Channel credentials: TLS verifying the server against files.ca (presenting cert/key when
// given), or plaintext when none are given.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& files);

// The common name of the client certificate the peer presented and the CA verified; nullopt
// when it presented none (or the connection is plaintext).
std::optional<std::string> VerifiedPeerName(const grpc::ServerContextBase& context);

// kennelctl's TLS files, from KENNEL_TLS_CA, KENNEL_TLS_CERT and KENNEL_TLS_KEY (all unset:
// plaintext).
TlsFiles TlsFilesFromEnvironment();

// The common name of the PEM certificate in `path` (a member's default node name with TLS).
absl::StatusOr<std::string> CertificateName(const std::string& path);

// True for a listen address on the loopback interface ("127.x.x.x:port", "[::1]:port",
// "localhost:port").
bool IsLoopbackAddress(const std::string& host_port);

// --- a certificate authority (OpenSSL's library), for `kennelctl certs` ---
struct Pem {
  std::string cert;
  std::string key;
};
// A self-signed CA (ECDSA P-256) named `name`, valid for `valid`.
absl::StatusOr<Pem> CreateCa(const std::string& name, absl::Duration valid);
// A certificate for `name` (its common name, and a DNS name in its subject alternative
// names, with every entry of `hosts` as an IP or DNS name) in `role` (core/auth.h: its
// organizational unit), signed by `ca`, for servers and clients alike.
absl::StatusOr<Pem> IssueCertificate(const Pem& ca, const std::string& name, const std::string& role,
                                     const std::vector<std::string>& hosts, absl::Duration valid);

}  // namespace kennel::core

#endif  // KENNEL_CORE_TLS_H_
