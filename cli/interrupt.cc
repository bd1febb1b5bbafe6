#include "cli/interrupt.h"

namespace kennel::cli {
namespace {

// What a signal handler may touch: one flag for the process.
volatile std::sig_atomic_t g_interrupted = 0;

}  // namespace

InterruptWatch::InterruptWatch() {
  g_interrupted = 0;
  previous_ = std::signal(SIGINT, [](int) { g_interrupted = 1; });
}

InterruptWatch::~InterruptWatch() { std::signal(SIGINT, previous_); }

bool InterruptWatch::interrupted() const { return g_interrupted != 0; }

}  // namespace kennel::cli
