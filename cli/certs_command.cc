#include "cli/certs_command.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/output.h"
#include "core/files.h"
#include "core/tls.h"

namespace kennel::cli {
namespace {

struct CertsOptions {
  std::string dir = "kennel-certs";
  std::string name;
  std::vector<std::string> hosts;
  std::string role = "member";
  int days = 825;
};

// Writes `data` to a new file `path` with `mode`; ALREADY_EXISTS rather than overwrite.
absl::Status WriteNew(const std::string& path, const std::string& data, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    return errno == EEXIST ? absl::AlreadyExistsError(absl::StrCat(path, " exists; not overwriting it"))
                           : absl::InvalidArgumentError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  const bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status WritePair(const std::string& dir, const std::string& stem, const core::Pem& pem) {
  const std::string cert = absl::StrCat(dir, "/", stem, ".pem"), key = absl::StrCat(dir, "/", stem, "-key.pem");
  std::error_code ec;
  if (std::filesystem::exists(cert, ec) || std::filesystem::exists(key, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(cert, " or ", key, " exists; not overwriting it"));
  }
  if (absl::Status s = WriteNew(key, pem.key, 0600); !s.ok()) return s;
  return WriteNew(cert, pem.cert, 0644);
}

int Init(const CertsOptions& o) {
  std::error_code ec;
  std::filesystem::create_directories(o.dir, ec);
  if (ec) return Fail(absl::InvalidArgumentError(absl::StrCat("cannot create ", o.dir, ": ", ec.message())));
  auto ca = core::CreateCa(o.name.empty() ? "Kennel cluster CA" : o.name, absl::Hours(24) * o.days);
  if (!ca.ok()) return Fail(ca.status());
  if (absl::Status s = WritePair(o.dir, "ca", *ca); !s.ok()) return Fail(s);
  std::cout << "CA written to " << o.dir << "/ca.pem (its key: " << o.dir
            << "/ca-key.pem, keep it off the cluster's machines)\n"
            << "Next: kennelctl certs issue NAME --dir " << o.dir << " [--host ADDRESS] for the coordinator, each "
            << "member and each user\n";
  return 0;
}

int Issue(const CertsOptions& o) {
  auto ca_cert = core::ReadFile(o.dir + "/ca.pem");
  auto ca_key = core::ReadFile(o.dir + "/ca-key.pem");
  if (!ca_cert.ok() || !ca_key.ok()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("no CA in ", o.dir, " (ca.pem and ca-key.pem): run `kennelctl certs init --dir ", o.dir, "` first")));
  }
  if (o.name.empty() || o.name.find('/') != std::string::npos || o.name.front() == '.' || o.name.size() > 64) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("'", o.name, "' is not a usable name (1-64 characters, no '/', not starting with '.')")));
  }
  auto pem = core::IssueCertificate(core::Pem{.cert = *ca_cert, .key = *ca_key}, o.name, o.role, o.hosts,
                                    absl::Hours(24) * o.days);
  if (!pem.ok()) return Fail(pem.status());
  if (absl::Status s = WritePair(o.dir, o.name, *pem); !s.ok()) return Fail(s);
  std::cout << "certificate for " << o.name << " (role " << o.role << ") written to " << o.dir << "/" << o.name << ".pem (key: " << o.dir
            << "/" << o.name << "-key.pem)\n";
  return 0;
}

}  // namespace

void AddCertsCommand(CLI::App& app, const GlobalOptions&) {
  auto* certs = app.add_subcommand(
      "certs",
      "The cluster's certificate authority: `init` makes it, `issue NAME` signs a certificate for a member "
      "(NAME = its node name), a server (--host for each address clients dial) or a user (--role admin, "
      "viewer or client)");
  certs->require_subcommand(1);
  auto opts = std::make_shared<CertsOptions>();

  auto* init = certs->add_subcommand("init", "Create the CA (ca.pem, ca-key.pem) in --dir");
  init->add_option("--dir", opts->dir, "Folder for the CA and the certificates")->capture_default_str();
  init->add_option("--name", opts->name, "The CA's name (default: Kennel cluster CA)");
  init->add_option("--days", opts->days, "Days it is valid")->check(CLI::Range(1, 36500))->capture_default_str();
  init->callback([opts] { throw CLI::RuntimeError(Init(*opts)); });

  auto* issue = certs->add_subcommand("issue", "Issue NAME.pem and NAME-key.pem, signed by the CA in --dir");
  issue->add_option("name", opts->name, "The node's name (members register only under it) or a user's")->required();
  issue->add_option("--dir", opts->dir, "Folder holding the CA")->capture_default_str();
  issue->add_option("--host", opts->hosts,
                    "An IP address or DNS name clients dial this server at (repeat for several)");
  issue->add_option("--role", opts->role,
                    "member (trainers, inference nodes, the coordinator), admin (drives the cluster), viewer "
                    "(status, jobs, models) or client (classifies)")
      ->check(CLI::IsMember({"member", "admin", "viewer", "client"}))
      ->capture_default_str();
  issue->add_option("--days", opts->days, "Days it is valid")->check(CLI::Range(1, 36500))->capture_default_str();
  issue->callback([opts] { throw CLI::RuntimeError(Issue(*opts)); });
}

}  // namespace kennel::cli
