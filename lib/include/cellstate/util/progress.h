#pragma once
// Progress of long work on stderr: a live line redrawn in place when stderr
// is a terminal, a plain line every 30 seconds when it is not (a log file),
// nothing when quiet. Messages (one line each) are always printed unless
// quiet.

#include <chrono>
#include <string>

namespace cellstate {

/// "m:ss" or "h:mm:ss"; "?" for a negative or infinite time.
std::string format_duration(double seconds);

/// 12.3, 12.3k, 1.2M: a rate for a progress line.
std::string format_rate(double rate);

class Progress {
 public:
  /// `unit`: what the work counts (tok, examples, lines), for rates.
  explicit Progress(bool quiet, std::string unit = "");

  /// Shows `text` as the current state (rate-limited: at most 10 times a
  /// second on a terminal, every 30 s otherwise).
  void update(const std::string& text);
  /// Prints `text` as a line of its own, clearing the live line first.
  void message(const std::string& text);

  const std::string& unit() const { return unit_; }

 private:
  bool quiet_;
  bool tty_;
  bool shown_ = false;
  std::string unit_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace cellstate
