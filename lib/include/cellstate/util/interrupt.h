#pragma once
// SIGINT and SIGTERM during long work (training): the first signal asks the
// work to stop at its next safe point (a checkpoint written, temporaries
// removed), a second one ends the process at once with status 128+signal.
//
//   InterruptGuard guard;        // from the start of the command
//   ...; guard.check();          // between phases: throws Interrupted
//   if (guard.requested()) ...   // in a loop that stops cleanly itself
//
// Guards nest: only the outermost installs the handlers (and restores the
// previous ones when it goes), so a signal received while reading data is
// still seen by the training loop's guard.
//
// The handlers run on an alternate signal stack (SignalStack), never on the
// stack of the code they interrupt: oneDNN 2.6's JIT GEMM kernels (the
// float32 "nocopy" products behind its gemm:jit matmul, and others) point
// the stack pointer into a heap buffer while they run, so the kernel wrote a
// signal's frame (about 3 KB with AVX-512 state) into the heap below that
// buffer, over glibc's chunk headers: "corrupted size vs. prev_size" or
// "double free" aborts at a later free(), in about 1% of interrupted
// training runs (uxlfoundation/oneDNN#4845; fixed upstream in March 2026,
// after the oneDNN that Debian's LibTorch 1.13 bundles). A process-directed
// signal goes to the main thread unless that thread blocks it, so the
// thread that installs the handlers, the main thread of every app, is the
// one given the stack.

#include <exception>
#include <memory>
#include <string>

#include <signal.h>

namespace cellstate {

/// The work was stopped by SIGINT or SIGTERM: apps exit with 128 + signal()
/// (130, 143).
class Interrupted : public std::exception {
 public:
  explicit Interrupted(int signal) : signal_(signal), what_("interrupted by " + name(signal)) {}
  int signal() const { return signal_; }
  int exit_status() const { return 128 + signal_; }
  const char* what() const noexcept override { return what_.c_str(); }
  /// "SIGINT", "SIGTERM" or "signal N".
  static std::string name(int signal);

 private:
  int signal_;
  std::string what_;
};

/// Gives the calling thread an alternate signal stack (sigaltstack) of
/// kBytes while it lives, unless the thread has one already; the destructor,
/// run on the same thread, disables the one it gave. Handlers installed with
/// install_signal_handler then run on it.
class SignalStack {
 public:
  /// At least this many bytes (or the system's _SC_SIGSTKSZ, if larger):
  /// a frame with AVX-512 state takes about 3 KB, with AMX tiles about 11.
  static constexpr size_t kBytes = size_t{64} << 10;

  SignalStack();
  ~SignalStack();
  SignalStack(const SignalStack&) = delete;
  SignalStack& operator=(const SignalStack&) = delete;

  /// Whether this object gave the thread its stack (false: it had one, or
  /// the system refused, and handlers run where they did before).
  bool installed() const { return memory_ != nullptr; }

 private:
  std::unique_ptr<char[]> memory_;
};

/// sigaction(signo) for `handler`, to run on the alternate signal stack of
/// the thread that takes the signal (SA_ONSTACK; a thread without one runs
/// it where it is), with no other signal blocked; system calls it
/// interrupts fail with EINTR (no SA_RESTART). The action replaced goes to
/// *previous unless previous is null.
void install_signal_handler(int signo, void (*handler)(int), struct sigaction* previous);

class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

  /// Whether a signal came since the outermost guard was installed.
  bool requested() const;
  /// The first signal received (0: none).
  int signal() const;
  /// Throws Interrupted when a signal came.
  void check() const;

 private:
  std::unique_ptr<SignalStack> stack_;  // the outermost guard's
};

}  // namespace cellstate
