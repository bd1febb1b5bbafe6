// `kennelctl certs`: the cluster's certificate authority. `init` creates the CA; `issue`
// gives a member (its node name), a server (with --host for each address clients dial) or a
// person a certificate signed by it. Keys are written readable by their owner only, and no
// existing file is overwritten.
#ifndef KENNEL_CLI_CERTS_COMMAND_H_
#define KENNEL_CLI_CERTS_COMMAND_H_

#include <CLI/CLI.hpp>

namespace kennel::cli {

struct GlobalOptions;
void AddCertsCommand(CLI::App& app, const GlobalOptions& global);

}  // namespace kennel::cli

#endif  // KENNEL_CLI_CERTS_COMMAND_H_
