// The member side of a coordinator control stream, shared by trainers and inference nodes:
// dial out, send Register, heartbeat every interval the coordinator asks for, hand each
// CoordinatorMessage to a callback, and reconnect with backoff whenever the stream breaks
// (a coordinator restart, a network cut, or the coordinator closing a stream it declared
// dead).
//
// Nothing here blocks its callers: Send() queues (or drops, see below) and returns; Stop()
// cancels whatever is in progress, a connection attempt included. Three owned threads: the
// reader (connects, registers, reads), the writer (writes queued messages; the only thread
// that writes after Register), and heartbeats; the destructor stops and joins them.
//
// While disconnected, heartbeats and step reports are dropped (they are stale by the time a
// stream is back); messages the coordinator must not miss (Send with `keep` true: epoch
// results, a finished or failed rank) are kept, up to a bound, and sent after the next
// registration, where generation fencing decides whether they still count.
#ifndef KENNEL_CORE_MEMBER_CONTROL_STREAM_H_
#define KENNEL_CORE_MEMBER_CONTROL_STREAM_H_

#include <deque>
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

// A per-process identity sent with every Register: the coordinator tells a member that
// reconnects (same incarnation) from a second process claiming the same name.
std::string NewIncarnation();

class ControlStream {
 public:
  ControlStream(kennel::v1::Coordinator::Stub* stub, std::string description, ControlStreamCallbacks callbacks);
  ~ControlStream();

  // Queues `message` for the coordinator. Never blocks. Dropped while disconnected unless
  // `keep` (then sent after the next registration; at most kMaxKept are kept).
  void Send(const kennel::v1::TrainerMessage& message, bool keep = false);
  // Stops reconnecting and closes the stream. Never blocks.
  void Stop();
  // True while registered on a live stream.
  bool connected();

  static constexpr size_t kMaxKept = 1024;

 private:
  using Stream = grpc::ClientReaderWriter<kennel::v1::TrainerMessage, kennel::v1::CoordinatorMessage>;
  void ReadLoop();
  void WriteLoop();
  void HeartbeatLoop();

  kennel::v1::Coordinator::Stub* const stub_;
  const std::string description_;
  const ControlStreamCallbacks callbacks_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // The stream's context, kept for Stop's TryCancel (never held across a blocking call).
  std::shared_ptr<grpc::ClientContext> context_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Stream> stream_ ABSL_GUARDED_BY(mu_);
  bool connected_ ABSL_GUARDED_BY(mu_) = false;  // Registered (ack received) on stream_.
  // Since when it is not registered; a line is logged every 30 s of that (the stream itself
  // waits silently for a coordinator that does not answer).
  absl::Time unregistered_since_ ABSL_GUARDED_BY(mu_) = absl::Now();
  absl::Time said_unregistered_ ABSL_GUARDED_BY(mu_) = absl::Now();
  std::deque<kennel::v1::TrainerMessage> outbox_ ABSL_GUARDED_BY(mu_);  // For the writer.
  std::deque<kennel::v1::TrainerMessage> kept_ ABSL_GUARDED_BY(mu_);    // Until reconnected.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // The writer is in a Write call.
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_) = absl::Seconds(1);
  std::thread reader_;
  std::thread writer_;
  std::thread heartbeat_;
};

}  // namespace kennel::core

#endif  // KENNEL_CORE_MEMBER_CONTROL_STREAM_H_
