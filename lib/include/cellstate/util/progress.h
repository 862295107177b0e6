#pragma once
// Progress of long work on stderr: a live line redrawn in place when stderr
// is a terminal, a plain line every 30 seconds when it is not (a log file),
// nothing when quiet. Messages (one line each) are always printed unless
// quiet.

#include <chrono>
#include <cstdint>
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

/// A progress bar for counted work on stderr, drawn in place and only when
/// stderr is a terminal (and not quiet): "[#####.....] 512/1014 sentences
/// 45.2/s ETA 0:12", or without a known total "512 lines 45.2/s". Cleared
/// when done.
class CountProgress {
 public:
  /// `total` 0: not known in advance.
  CountProgress(bool quiet, std::string unit, int64_t total = 0);
  ~CountProgress();
  CountProgress(const CountProgress&) = delete;
  CountProgress& operator=(const CountProgress&) = delete;

  /// `n` more units done.
  void add(int64_t n);
  /// Whether anything is drawn (a terminal, not quiet).
  bool shown() const { return active_; }

 private:
  bool active_;
  std::string unit_;
  int64_t total_;
  int64_t done_ = 0;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace cellstate
