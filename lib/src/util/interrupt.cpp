#include "cellstate/util/interrupt.h"

#include <algorithm>
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

SignalStack::SignalStack() {
  stack_t now{};
  if (sigaltstack(nullptr, &now) != 0 || !(now.ss_flags & SS_DISABLE)) return;  // it has one (or is on it)
  size_t bytes = kBytes;
#ifdef _SC_SIGSTKSZ
  const long system = sysconf(_SC_SIGSTKSZ);
  if (system > 0) bytes = std::max(bytes, static_cast<size_t>(system));
#endif
  auto memory = std::make_unique<char[]>(bytes);
  stack_t stack{};
  stack.ss_sp = memory.get();
  stack.ss_size = bytes;
  if (sigaltstack(&stack, nullptr) != 0) return;
  memory_ = std::move(memory);
}

SignalStack::~SignalStack() {
  if (memory_ == nullptr) return;  // the thread's own stack stays
  stack_t disable{};
  disable.ss_flags = SS_DISABLE;  // it had none before this one
  sigaltstack(&disable, nullptr);
}

void install_signal_handler(int signo, void (*handler)(int), struct sigaction* previous) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_ONSTACK;
  sigaction(signo, &sa, previous);
}

InterruptGuard::InterruptGuard() {
  if (depth++ > 0) return;
  first_signal = 0;
  signal_count = 0;
  stack_ = std::make_unique<SignalStack>();  // before the handlers that run on it
  install_signal_handler(SIGINT, on_signal, &old_int);
  install_signal_handler(SIGTERM, on_signal, &old_term);
}

InterruptGuard::~InterruptGuard() {
  if (--depth > 0) return;
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  // stack_ goes after this body: no handler of ours runs on it any more.
}

bool InterruptGuard::requested() const { return signal_count.load() > 0; }

int InterruptGuard::signal() const { return first_signal.load(); }

void InterruptGuard::check() const {
  if (requested()) throw Interrupted(signal());
}

}  // namespace cellstate
