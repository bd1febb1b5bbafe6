// The TLS flags every Kennel service takes (header-only: each main links CLI11).
#ifndef KENNEL_CORE_TLS_FLAGS_H_
#define KENNEL_CORE_TLS_FLAGS_H_

#include <CLI/CLI.hpp>

#include "core/tls.h"

namespace kennel::core {

// --tls_ca, --tls_cert, --tls_key; and --insecure when `insecure` is given (a server that
// listens off the loopback without TLS refuses to start without it).
inline void AddTlsFlags(CLI::App& app, TlsFiles& tls, bool* insecure) {
  app.add_option("--tls_ca", tls.ca,
                 "PEM certificate of the cluster's CA: peers are verified against it, and with TLS every "
                 "client must present a certificate it issued (`kennelctl certs`)")
      ->check(CLI::ExistingFile)
      ->group("Security");
  app.add_option("--tls_cert", tls.cert,
                 "PEM certificate of this process, issued by the CA for its node name (members register "
                 "only under that name)")
      ->check(CLI::ExistingFile)
      ->group("Security");
  app.add_option("--tls_key", tls.key, "PEM private key of --tls_cert")->check(CLI::ExistingFile)->group("Security");
  if (insecure != nullptr) {
    app.add_flag("--insecure", *insecure,
                 "Serve plaintext on an address off the loopback (only on a network no one else reaches)")
        ->group("Security");
  }
}

}  // namespace kennel::core

#endif  // KENNEL_CORE_TLS_FLAGS_H_
