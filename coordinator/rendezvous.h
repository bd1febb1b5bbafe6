// The rendezvous key-value store trainers bootstrap their collectives through (Gloo's and
// NCCL's address exchange, diagnostics of a timed-out collective): one key space per job,
// valid for the job's current generation only. It has its own lock: trainers polling it while
// a group forms never wait on the cluster's, and the cluster only opens and closes spaces.
//
// Thread-safe.
#ifndef KENNEL_COORDINATOR_RENDEZVOUS_H_
#define KENNEL_COORDINATOR_RENDEZVOUS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace kennel::coordinator {

class Rendezvous {
 public:
  // `generation` of `job_id` runs: its key space starts empty (an older generation's keys are
  // gone, and that generation is fenced off).
  void Open(const std::string& job_id, int64_t generation);
  // The job has no running generation (recovering, ended): its keys are dropped and every call
  // for it fails with FAILED_PRECONDITION until the next Open.
  void Close(const std::string& job_id);

  // NOT_FOUND for a job never opened; FAILED_PRECONDITION for a generation that is not the
  // running one; INVALID_ARGUMENT for keys outside 1..1024 bytes or values over 1 MiB.
  absl::Status Set(const std::string& job_id, int64_t generation, const std::string& key,
                   const std::string& value);
  // Also NOT_FOUND naming the first key not set.
  absl::StatusOr<std::vector<std::string>> Get(const std::string& job_id, int64_t generation,
                                               const std::vector<std::string>& keys);

 private:
  struct Space {
    int64_t generation = 0;
    bool open = false;
    std::map<std::string, std::string> kv;
  };
  // The job's space when `generation` is its running one.
  absl::StatusOr<Space*> Current(const std::string& job_id, int64_t generation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::map<std::string, Space> spaces_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kennel::coordinator

#endif  // KENNEL_COORDINATOR_RENDEZVOUS_H_
