#include "core/member/control_stream.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/testing/eventually.h"

namespace kennel::core {
namespace {

using testing::Eventually;

// A coordinator that acknowledges every Register and records what each stream carried
// (heartbeats aside).
class RecordingCoordinator final : public v1::Coordinator::Service {
 public:
  grpc::Status TrainerControl(grpc::ServerContext*,
                              grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::TrainerMessage>* stream) override {
    v1::TrainerMessage message;
    if (!stream->Read(&message) || !message.has_register_()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "Register first");
    }
    Record(message);
    v1::CoordinatorMessage ack;
    ack.mutable_ack()->set_heartbeat_interval_ms(100);
    stream->Write(ack);
    while (stream->Read(&message)) {
      if (!message.has_heartbeat()) Record(message);
    }
    return grpc::Status::OK;
  }

  std::vector<v1::TrainerMessage> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }

 private:
  void Record(const v1::TrainerMessage& message) {
    absl::MutexLock lock(&mu_);
    received_.push_back(message);
  }

  absl::Mutex mu_;
  std::vector<v1::TrainerMessage> received_ ABSL_GUARDED_BY(mu_);
};

std::unique_ptr<grpc::Server> Serve(RecordingCoordinator* service, int port, int* bound) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(), bound);
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

// A member that waited through an outage registers with what it is doing when the
// coordinator is back, not with what it was doing when it began waiting: a trainer whose job
// ended meanwhile once registered as still busy with it, its Idle (sent while disconnected)
// was dropped, and the coordinator waited for it forever. What it sent with `keep` during the
// outage follows the Register, in order; what it sent without is dropped.
TEST(ControlStreamTest, RegistersWithItsStateWhenTheCoordinatorIsBackAndThenSendsWhatItKept) {
  // A free port, then nothing listening on it.
  int port = 0;
  {
    RecordingCoordinator probe;
    auto server = Serve(&probe, 0, &port);
    ASSERT_NE(server, nullptr);
    server->Shutdown();
  }
  ASSERT_GT(port, 0);
  absl::Mutex mu;
  std::string job = "job-1";
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  auto stub = v1::Coordinator::NewStub(channel);
  ControlStream stream(stub.get(), "test member",
                       {.make_register =
                            [&] {
                              absl::MutexLock lock(&mu);
                              v1::Register r;
                              r.set_name("member");
                              r.set_job_id(job);
                              r.set_generation(job.empty() ? 0 : 1);
                              return r;
                            },
                        .make_heartbeat = [] { return v1::Heartbeat(); },
                        .on_message = [](const v1::CoordinatorMessage&) {}});
  // The member is waiting for the coordinator; meanwhile its job ends.
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_FALSE(stream.connected());
  v1::TrainerMessage finished, step, idle;
  finished.mutable_finished()->set_job_id("job-1");
  finished.mutable_finished()->set_generation(1);
  step.mutable_step()->set_job_id("job-1");
  idle.mutable_idle()->set_job_id("job-1");
  idle.mutable_idle()->set_generation(1);
  stream.Send(finished, /*keep=*/true);
  stream.Send(step);
  {
    absl::MutexLock lock(&mu);
    job.clear();
  }
  stream.Send(idle, /*keep=*/true);

  RecordingCoordinator coordinator;
  int bound = 0;
  auto server = Serve(&coordinator, port, &bound);
  ASSERT_NE(server, nullptr);
  ASSERT_EQ(bound, port);
  ASSERT_TRUE(Eventually([&] { return coordinator.received().size() >= 3; }, absl::Seconds(30)));
  const auto received = coordinator.received();
  ASSERT_EQ(received.size(), 3u);
  ASSERT_TRUE(received[0].has_register_());
  EXPECT_EQ(received[0].register_().job_id(), "");
  EXPECT_EQ(received[0].register_().generation(), 0);
  EXPECT_FALSE(received[0].register_().incarnation().empty());
  EXPECT_TRUE(received[1].has_finished());
  EXPECT_TRUE(received[2].has_idle());
  EXPECT_TRUE(stream.connected());
  stream.Stop();
  server->Shutdown();
}

}  // namespace
}  // namespace kennel::core
