// Ctrl-C while kennelctl follows long work (a job, a search) detaches instead of killing it:
// the command notices, says what keeps running, and exits 0.
#ifndef KENNEL_CLI_INTERRUPT_H_
#define KENNEL_CLI_INTERRUPT_H_

#include <csignal>

namespace kennel::cli {

// While it lives, SIGINT only sets a flag that interrupted() reads; the handler it replaced
// comes back when it is destroyed. SIGINT's handler is the process's: one at a time, on the
// main thread. interrupted() may be read from any thread.
class InterruptWatch {
 public:
  InterruptWatch();
  ~InterruptWatch();
  InterruptWatch(const InterruptWatch&) = delete;
  InterruptWatch& operator=(const InterruptWatch&) = delete;

  bool interrupted() const;

 private:
  void (*previous_)(int);
};

}  // namespace kennel::cli

#endif  // KENNEL_CLI_INTERRUPT_H_
