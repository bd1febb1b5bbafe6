// Polling for tests that watch other processes: a condition that becomes true "eventually".
#ifndef KENNEL_CORE_TESTING_EVENTUALLY_H_
#define KENNEL_CORE_TESTING_EVENTUALLY_H_

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kennel::core::testing {

// Polls `done` every `poll` until it holds or `timeout` passes; its last answer.
inline bool Eventually(const std::function<bool()>& done, absl::Duration timeout,
                       absl::Duration poll = absl::Milliseconds(200)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(poll);
  }
  return done();
}

}  // namespace kennel::core::testing

#endif  // KENNEL_CORE_TESTING_EVENTUALLY_H_
