#include "core/process_setup.h"

#include <malloc.h>

#include "absl/synchronization/mutex.h"

namespace kennel::core {

void TuneAllocator() {
  mallopt(M_MMAP_THRESHOLD, 512 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

void DisableMutexDeadlockDetection() { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); }

}  // namespace kennel::core
