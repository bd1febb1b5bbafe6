// TLS and mutual TLS on real processes: certificates from `kennelctl certs`, a coordinator that
// accepts only clients with a certificate from its CA, members that register only under their
// certificate's name, and services that refuse to serve plaintext off the loopback.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/files.h"
#include "core/subprocess.h"
#include "core/testing/eventually.h"
#include "core/testing/paths.h"

namespace kennel {
namespace {

using core::Process;
using core::testing::BuildDir;
using core::testing::Eventually;
namespace fs = std::filesystem;

struct CtlRun {
  int code = -1;
  std::string out;
};

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = (fs::path(::testing::TempDir()) / absl::StrCat("tls-", ::getpid())).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    certs_ = dir_ + "/certs";
    ASSERT_EQ(Ctl({"certs", "init", "--dir", certs_}).code, 0);
    for (const std::vector<std::string>& issue :
         std::vector<std::vector<std::string>>{{"coordinator", "--host", "127.0.0.1"},
                                               {"trainer-a"},
                                               {"mallory"},
                                               {"admin", "--role", "admin"},
                                               {"viewer-1", "--role", "viewer"},
                                               {"client-1", "--role", "client"},
                                               {"inference-1", "--host", "127.0.0.1"}}) {
      std::vector<std::string> argv = {"certs", "issue", issue[0], "--dir", certs_};
      argv.insert(argv.end(), issue.begin() + 1, issue.end());
      CtlRun r = Ctl(argv);
      ASSERT_EQ(r.code, 0) << r.out;
    }
    // Another CA's certificate for a name the cluster knows.
    ASSERT_EQ(Ctl({"certs", "init", "--dir", dir_ + "/other"}).code, 0);
    ASSERT_EQ(Ctl({"certs", "issue", "trainer-b", "--dir", dir_ + "/other"}).code, 0);

    auto c = Process::Start({BuildDir() + "/coordinator/kennel-coordinator", "--listen", "127.0.0.1:0", "--data_dir",
                             dir_ + "/coord", "--tls_ca", Cert("ca"), "--tls_cert", Cert("coordinator"), "--tls_key",
                             Key("coordinator")},
                            dir_ + "/coordinator.log");
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = c->release();
    auto line = coordinator_->WaitForLine("listening on port ", absl::Seconds(30));
    ASSERT_TRUE(line.ok()) << line.status() << coordinator_->Log();
    address_ = absl::StrCat("127.0.0.1:", line->substr(line->rfind(' ') + 1));
  }
  static void TearDownTestSuite() {
    delete coordinator_;
    // A failed run's folder stays for its logs.
    if (::testing::UnitTest::GetInstance()->current_test_suite()->Passed()) fs::remove_all(dir_);
  }

  static std::string Cert(const std::string& name, const std::string& dir = "") {
    return (dir.empty() ? certs_ : dir) + "/" + name + ".pem";
  }
  static std::string Key(const std::string& name, const std::string& dir = "") {
    return (dir.empty() ? certs_ : dir) + "/" + name + "-key.pem";
  }
  // kennelctl ARGS with `env`; its exit code and its stdout and stderr together.
  static CtlRun Ctl(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    std::vector<std::string> argv = {BuildDir() + "/cli/kennelctl"};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string log = absl::StrCat(dir_, "/kennelctl-", ++runs_, ".log");
    auto p = Process::Start(argv, log, env);
    if (!p.ok()) return {};
    auto code = (*p)->Wait(absl::Seconds(60));
    return {code.ok() ? *code : -1, (*p)->Log()};
  }
  static std::vector<std::string> EnvOf(const std::string& who) {
    return {"KENNEL_TLS_CA=" + Cert("ca"), "KENNEL_TLS_CERT=" + Cert(who), "KENNEL_TLS_KEY=" + Key(who)};
  }
  static std::vector<std::string> AdminEnv() { return EnvOf("admin"); }
  // The status table as the admin sees it.
  static std::string Status() { return Ctl({"-c", address_, "status"}, AdminEnv()).out; }

  static std::unique_ptr<Process> StartTrainer(const std::string& log, std::vector<std::string> extra) {
    std::vector<std::string> argv = {BuildDir() + "/trainer_node/kennel-trainer", "--coordinator", address_,
                                     "--work_dir", dir_ + "/" + log};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto t = Process::Start(argv, dir_ + "/" + log + ".log");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }

  static inline std::string dir_, certs_, address_;
  static inline Process* coordinator_ = nullptr;
  static inline int runs_ = 0;
};

TEST_F(TlsTest, CertificatesAreNeverOverwrittenAndKeysArePrivate) {
  const std::string before = *core::ReadFile(Cert("admin"));
  CtlRun again = Ctl({"certs", "issue", "admin", "--dir", certs_});
  EXPECT_NE(again.code, 0);
  EXPECT_NE(again.out.find("not overwriting"), std::string::npos) << again.out;
  EXPECT_EQ(*core::ReadFile(Cert("admin")), before);
  struct stat st {};
  ASSERT_EQ(::stat(Key("admin").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  CtlRun no_ca = Ctl({"certs", "issue", "x", "--dir", dir_ + "/nowhere"});
  EXPECT_EQ(no_ca.code, 2) << no_ca.out;
  EXPECT_NE(no_ca.out.find("kennelctl certs init"), std::string::npos) << no_ca.out;
}

// The trainer's certificate names it; another certificate cannot register under that name (it
// used to evict the live member), and neither can a member with no certificate or one from
// another CA.
TEST_F(TlsTest, AMemberRegistersOnlyUnderItsCertificatesName) {
  auto a = StartTrainer("trainer-a", {"--tls_ca", Cert("ca"), "--tls_cert", Cert("trainer-a"), "--tls_key",
                                      Key("trainer-a")});  // No --name: the certificate's.
  ASSERT_TRUE(Eventually([] { return Status().find("trainer-a") != std::string::npos; }, absl::Seconds(30)))
      << Status();
  auto impostor = StartTrainer("impostor", {"--name", "trainer-a", "--tls_ca", Cert("ca"), "--tls_cert",
                                            Cert("mallory"), "--tls_key", Key("mallory")});
  auto refused = impostor->WaitForLine("it cannot register as 'trainer-a'", absl::Seconds(30));
  EXPECT_TRUE(refused.ok()) << impostor->Log();
  auto plain = StartTrainer("plain", {"--name", "trainer-p"});
  auto foreign = StartTrainer("foreign", {"--name", "trainer-b", "--tls_ca", Cert("ca"), "--tls_cert",
                                          Cert("trainer-b", dir_ + "/other"), "--tls_key",
                                          Key("trainer-b", dir_ + "/other")});
  absl::SleepFor(absl::Seconds(3));  // Each has tried to register by now.
  const std::string status = Status();
  EXPECT_EQ(status.find("mallory"), std::string::npos) << status;
  EXPECT_EQ(status.find("trainer-p"), std::string::npos) << status;
  EXPECT_EQ(status.find("trainer-b"), std::string::npos) << status;
  EXPECT_NE(status.find("idle"), std::string::npos) << status;  // trainer-a, still the live member.
  EXPECT_EQ(a->Log().find("control stream ended"), std::string::npos) << a->Log();
}

TEST_F(TlsTest, KennelctlNeedsTheCaAndACertificateAndSaysSo) {
  CtlRun none = Ctl({"-c", address_, "status"});
  EXPECT_EQ(none.code, 3) << none.out;
  EXPECT_NE(none.out.find("set KENNEL_TLS_CA"), std::string::npos) << none.out;
  CtlRun ca_only = Ctl({"-c", address_, "status"}, {"KENNEL_TLS_CA=" + Cert("ca")});
  EXPECT_EQ(ca_only.code, 3) << ca_only.out;
  EXPECT_NE(ca_only.out.find("set KENNEL_TLS_CERT and KENNEL_TLS_KEY"), std::string::npos) << ca_only.out;
  CtlRun missing = Ctl({"-c", address_, "status"}, {"KENNEL_TLS_CA=" + dir_ + "/no-such.pem"});
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_NE(missing.out.find("no-such.pem"), std::string::npos) << missing.out;
  CtlRun admin = Ctl({"-c", address_, "status"}, AdminEnv());
  EXPECT_EQ(admin.code, 0) << admin.out;
}

// An inference node serves TLS with its certificate and registers under its name.
TEST_F(TlsTest, AnInferenceNodeServesTlsAndRegistersUnderItsCertificatesName) {
  auto node = Process::Start({BuildDir() + "/inference_node/kennel-inference", "--listen", "127.0.0.1:0",
                              "--metrics_port", "-1", "--coordinator", address_, "--cache_dir", dir_ + "/inf-cache",
                              "--tls_ca", Cert("ca"), "--tls_cert", Cert("inference-1"), "--tls_key",
                              Key("inference-1")},
                             dir_ + "/inference-1.log");
  ASSERT_TRUE(node.ok());
  ASSERT_TRUE(Eventually([] { return Status().find("inference-1") != std::string::npos; }, absl::Seconds(30)))
      << Status() << (*node)->Log();
  auto line = (*node)->WaitForLine("listening on port ", absl::Seconds(10));
  ASSERT_TRUE(line.ok());
  const std::string port = line->substr(line->find("port ") + 5, line->find(" metrics") - line->find("port ") - 5);
  const std::string address = "127.0.0.1:" + port;
  const std::string png = dir_ + "/one-pixel.png";
  ASSERT_TRUE(core::WriteFileAtomic(png, std::string("\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\x68\x68\x68\x00\x00\x03\x04\x01\x81\x4b\xd3\xd2\x10\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82", 69)).ok());
  // Over TLS the node answers (it has no model yet); in plaintext it cannot be reached.
  CtlRun tls = Ctl({"classify", "-s", address, png}, EnvOf("client-1"));
  EXPECT_NE(tls.out.find("no model loaded yet"), std::string::npos) << tls.out;
  CtlRun viewer = Ctl({"classify", "-s", address, png}, EnvOf("viewer-1"));
  EXPECT_NE(viewer.out.find("it needs the admin or client role"), std::string::npos) << viewer.out;
  CtlRun plain = Ctl({"classify", "-s", address, png});
  EXPECT_EQ(plain.code, 3) << plain.out;
  EXPECT_NE(plain.out.find("cannot reach the inference node"), std::string::npos) << plain.out;
}

// Each role's allowed and refused calls, checked by the servers; a refusal names the role
// needed. `status` says who the coordinator took the caller for.
TEST_F(TlsTest, EachRoleMayCallOnlyItsMethods) {
  CtlRun admin = Ctl({"-c", address_, "status"}, AdminEnv());
  EXPECT_EQ(admin.code, 0) << admin.out;
  EXPECT_NE(admin.out.find("AS admin (admin)"), std::string::npos) << admin.out;

  CtlRun viewer = Ctl({"-c", address_, "status"}, EnvOf("viewer-1"));
  EXPECT_EQ(viewer.code, 0) << viewer.out;
  EXPECT_NE(viewer.out.find("AS viewer-1 (viewer)"), std::string::npos) << viewer.out;
  EXPECT_EQ(Ctl({"-c", address_, "jobs"}, EnvOf("viewer-1")).code, 0);
  for (const std::vector<std::string>& write : std::vector<std::vector<std::string>>{
           {"train", "--name", "nope", "--detach"}, {"cancel", "job-1"}, {"deploy", "fashion"}}) {
    std::vector<std::string> argv = {"-c", address_};
    argv.insert(argv.end(), write.begin(), write.end());
    CtlRun refused = Ctl(argv, EnvOf("viewer-1"));
    EXPECT_NE(refused.code, 0) << write[0];
    EXPECT_NE(refused.out.find("'viewer-1' (role viewer) may not call"), std::string::npos) << refused.out;
    EXPECT_NE(refused.out.find("it needs the admin role"), std::string::npos) << refused.out;
  }
  // A client classifies but cannot look at the cluster; a member's certificate is no user's.
  for (const std::string who : {"client-1", "trainer-a"}) {
    CtlRun refused = Ctl({"-c", address_, "status"}, EnvOf(who));
    EXPECT_NE(refused.code, 0) << who;
    EXPECT_NE(refused.out.find("it needs the admin or viewer role"), std::string::npos) << refused.out;
  }
  // An admin's certificate does not make a trainer.
  auto trainer = StartTrainer("admin-as-trainer", {"--tls_ca", Cert("ca"), "--tls_cert", Cert("admin"), "--tls_key",
                                                   Key("admin")});
  auto refused = trainer->WaitForLine("may not call TrainerControl: it needs the member role", absl::Seconds(30));
  EXPECT_TRUE(refused.ok()) << trainer->Log();
  CtlRun bad_role = Ctl({"certs", "issue", "eve", "--dir", certs_, "--role", "root"});
  EXPECT_EQ(bad_role.code, 2) << bad_role.out;
}

// A TorchScript model is code every inference node would run: only an admin imports one. A
// member's certificate (a node's) may upload weights models, not this.
TEST_F(TlsTest, OnlyAnAdminMayImportATorchScriptModel) {
  const std::string classes = dir_ + "/classes.txt";
  ASSERT_TRUE(core::WriteFileAtomic(classes, "a\nb\nc\nd\ne\nf\ng\n").ok());
  const std::vector<std::string> import = {"-c", address_, "import", core::testing::FixtureDir() + "/scripted_cnn.pt",
                                           "--name", "scripted", "--classes-file", classes, "--input-size", "32",
                                           "--resize-shorter", "0", "--register"};
  CtlRun member = Ctl(import, EnvOf("trainer-a"));
  EXPECT_NE(member.code, 0) << member.out;
  EXPECT_NE(member.out.find("only the admin role may import one"), std::string::npos) << member.out;
  CtlRun admin = Ctl(import, AdminEnv());
  EXPECT_EQ(admin.code, 0) << admin.out;
  EXPECT_NE(admin.out.find("registered scripted version 1"), std::string::npos) << admin.out;
}

// Off the loopback, plaintext needs --insecure; TLS without a CA to verify members is refused.
TEST_F(TlsTest, PlaintextOffTheLoopbackIsRefusedUnlessInsecure) {
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {BuildDir() + "/coordinator/kennel-coordinator", "--listen", "0.0.0.0:0", "--data_dir", dir_ + "/open"},
           {BuildDir() + "/inference_node/kennel-inference", "--listen", "0.0.0.0:0", "--metrics_port", "-1"}}) {
    auto refused = Process::Start(argv, dir_ + "/open.log");
    ASSERT_TRUE(refused.ok());
    auto code = (*refused)->Wait(absl::Seconds(30));
    ASSERT_TRUE(code.ok());
    EXPECT_EQ(*code, 1) << (*refused)->Log();
    EXPECT_NE((*refused)->Log().find("without TLS"), std::string::npos) << (*refused)->Log();
    std::vector<std::string> insecure = argv;
    insecure.push_back("--insecure");
    auto started = Process::Start(insecure, dir_ + "/insecure.log");
    ASSERT_TRUE(started.ok());
    EXPECT_TRUE((*started)->WaitForLine("listening on port", absl::Seconds(30)).ok()) << (*started)->Log();
  }
  auto no_ca = Process::Start({BuildDir() + "/coordinator/kennel-coordinator", "--listen", "127.0.0.1:0", "--data_dir",
                               dir_ + "/no-ca", "--tls_cert", Cert("coordinator"), "--tls_key", Key("coordinator")},
                              dir_ + "/no-ca.log");
  ASSERT_TRUE(no_ca.ok());
  auto code = (*no_ca)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 1);
  EXPECT_NE((*no_ca)->Log().find("--tls_ca is required"), std::string::npos) << (*no_ca)->Log();
}

}  // namespace
}  // namespace kennel
