// The member side of a coordinator control stream, shared by trainers and inference nodes:
// dial out, send Register, heartbeat every interval the coordinator asks for, hand each
// CoordinatorMessage to a callback, and reconnect with backoff whenever the stream breaks
// (a coordinator restart included). Owns two threads (reader loop and heartbeats); the
// destructor stops and joins them. Send() is thread-safe and drops messages while
// disconnected (generation fencing makes anything sent then stale anyway).
#ifndef KENNEL_CORE_MEMBER_CONTROL_STREAM_H_
#define KENNEL_CORE_MEMBER_CONTROL_STREAM_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kennel/v1/coordinator.grpc.pb.h"

namespace kennel::core {

struct ControlStreamCallbacks {
  // The Register message for a (re)connect.
  std::function<kennel::v1::Register()> make_register;
  // A heartbeat's contents, sent every interval.
  std::function<kennel::v1::Heartbeat()> make_heartbeat;
  // Every message from the coordinator except the RegisterAck (handled here). Runs on the
  // reader thread; must not block for long.
  std::function<void(const kennel::v1::CoordinatorMessage&)> on_message;
};

class ControlStream {
 public:
  ControlStream(kennel::v1::Coordinator::Stub* stub, std::string description, ControlStreamCallbacks callbacks);
  ~ControlStream();

  void Send(const kennel::v1::TrainerMessage& message);
  // Stops reconnecting and closes the stream.
  void Stop();

 private:
  void ReadLoop();
  void HeartbeatLoop();

  kennel::v1::Coordinator::Stub* const stub_;
  const std::string description_;
  const ControlStreamCallbacks callbacks_;

  absl::Mutex stream_mu_;  // Serialises writes.
  std::unique_ptr<grpc::ClientContext> context_ ABSL_GUARDED_BY(stream_mu_);
  std::unique_ptr<grpc::ClientReaderWriter<kennel::v1::TrainerMessage, kennel::v1::CoordinatorMessage>>
      stream_ ABSL_GUARDED_BY(stream_mu_);

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_) = absl::Seconds(1);
  std::thread reader_;
  std::thread heartbeat_;
};

}  // namespace kennel::core

#endif  // KENNEL_CORE_MEMBER_CONTROL_STREAM_H_
