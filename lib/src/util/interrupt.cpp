#include "cellstate/util/interrupt.h"

#include <atomic>
#include <csignal>

#include <signal.h>
#include <unistd.h>

namespace cellstate {

namespace {

// A signal handler can only reach static storage: the first signal, how
// many came, and the guards alive (the outermost installs the handlers).
std::atomic<int> first_signal{0};
std::atomic<int> signal_count{0};
int depth = 0;
struct sigaction old_int {}, old_term {};

extern "C" void on_signal(int signo) {
  int expected = 0;
  first_signal.compare_exchange_strong(expected, signo);
  // A second signal means "now": leave without cleaning up.
  if (signal_count.fetch_add(1) >= 1) _exit(128 + signo);
}

}  // namespace

std::string Interrupted::name(int signal) {
  if (signal == SIGINT) return "SIGINT";
  if (signal == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(signal);
}

InterruptGuard::InterruptGuard() {
  if (depth++ > 0) return;
  first_signal = 0;
  signal_count = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
}

InterruptGuard::~InterruptGuard() {
  if (--depth > 0) return;
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
}

bool InterruptGuard::requested() const { return signal_count.load() > 0; }

int InterruptGuard::signal() const { return first_signal.load(); }

void InterruptGuard::check() const {
  if (requested()) throw Interrupted(signal());
}

}  // namespace cellstate
