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

#include <exception>
#include <string>

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
};

}  // namespace cellstate
