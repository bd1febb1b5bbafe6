// Process-wide settings every Kennel binary applies at start (called from main only).
#ifndef KENNEL_CORE_PROCESS_SETUP_H_
#define KENNEL_CORE_PROCESS_SETUP_H_

namespace kennel::core {

// glibc serves allocations over 128 KiB with mmap and returns them with munmap, so every
// batch's activation tensors are fresh pages: page faults and zeroing on every step (seen as
// ~35% kernel time in a serving profile). Raising the mmap and trim thresholds keeps freed
// tensor memory in the heap for reuse.
void TuneAllocator();

// Debian's abseil is built without NDEBUG, so every absl::Mutex acquisition runs its deadlock
// detector (a process-wide lock graph under a spinlock: ~2% of a serving profile, on every
// lock). Binaries turn it off; tests keep it (they are where a lock-order bug should show).
void DisableMutexDeadlockDetection();

}  // namespace kennel::core

#endif  // KENNEL_CORE_PROCESS_SETUP_H_
