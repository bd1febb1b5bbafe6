// The coordinator's durable writes, off the threads that react to members. The cluster changes
// its state under its lock from gRPC reactor threads; writing each change to SQLite there
// (synchronous=FULL: an fsync per commit) held the lock, and every member's heartbeat behind
// it, for the length of a disk flush. StateWriter takes the writes in order onto one thread of
// its own; calls that answer an administrator wait for theirs (UpdateJobAndWait).
//
// Thread-safe. The destructor writes everything queued before it returns.
#ifndef KENNEL_COORDINATOR_STATE_WRITER_H_
#define KENNEL_COORDINATOR_STATE_WRITER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/state_store.h"
#include "kennel/v1/job.pb.h"
#include "kennel/v1/node.pb.h"

namespace kennel::coordinator {

class StateWriter {
 public:
  explicit StateWriter(StateStore* state);
  ~StateWriter();
  StateWriter(const StateWriter&) = delete;
  StateWriter& operator=(const StateWriter&) = delete;

  // Queued; a failure is logged.
  void UpdateJob(kennel::v1::JobStatus status, std::string event);
  void SaveNode(kennel::v1::NodeStatus status);
  // Queued behind everything before it; returns once written, with the store's answer.
  absl::Status UpdateJobAndWait(kennel::v1::JobStatus status, std::string event);
  // Returns once everything queued so far is written.
  void Flush();

 private:
  // Returns the write's sequence number.
  int64_t Enqueue(std::function<absl::Status()> write);
  void WaitFor(int64_t sequence);
  void Loop();

  StateStore* const state_;
  absl::Mutex mu_;
  std::deque<std::function<absl::Status()>> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t written_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_STATE_WRITER_H_
