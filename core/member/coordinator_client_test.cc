#include "core/member/coordinator_client.h"

#include <gtest/gtest.h>
#include <netdb.h>

#include <string>

namespace kennel::core {
namespace {

void ExpectRefused(const std::string& address, const std::string& says) {
  const absl::Status s = CheckCoordinatorAddress(address);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << address << ": " << s;
  EXPECT_NE(s.message().find(says), std::string::npos) << address << ": " << s;
}

TEST(CoordinatorAddressTest, HostAndPortThatResolveAreTaken) {
  for (const char* ok : {"127.0.0.1:7070", "localhost:7070", "[::1]:7070", "dns:///localhost:7070",
                         "unix:/run/kennel.sock"}) {
    EXPECT_TRUE(CheckCoordinatorAddress(ok).ok()) << ok << ": " << CheckCoordinatorAddress(ok);
  }
}

TEST(CoordinatorAddressTest, WhatIsNotHostAndPortSaysTheForm) {
  for (const char* bad : {"localhost", "localhost:", ":7070", "localhost:0", "localhost:70700", "localhost:port"}) {
    ExpectRefused(bad, "HOST:PORT");
  }
}

TEST(CoordinatorAddressTest, AHostNameThatDoesNotExistIsNamed) {
  // RFC 2606 keeps .invalid from ever resolving; where no name server answers at all, the
  // check rightly lets the member wait, and there is nothing to see here.
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo("coordinatr.invalid", nullptr, nullptr, &found);
  if (found != nullptr) ::freeaddrinfo(found);
  if (rc != EAI_NONAME && rc != EAI_FAIL) GTEST_SKIP() << "no name server answers here: " << ::gai_strerror(rc);
  ExpectRefused("coordinatr.invalid:7070", "no host is named \"coordinatr.invalid\"");
}

}  // namespace
}  // namespace kennel::core
