#pragma once
// Timing: a stopwatch and the median the benchmarks report.

#include <chrono>
#include <vector>

namespace cellstate {

/// The median of `values` (the mean of the middle two for an even count);
/// std::invalid_argument when there are none.
double median(std::vector<double> values);

/// Wall-clock time since construction (or restart()).
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  void restart() { start_ = std::chrono::steady_clock::now(); }
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
  double ms() const { return 1000.0 * seconds(); }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace cellstate
