#include "cellstate/util/progress.h"

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <unistd.h>

namespace cellstate {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto total = static_cast<int64_t>(s + 0.5);
  std::ostringstream out;
  if (total >= 3600) out << total / 3600 << ":" << std::setw(2) << std::setfill('0') << (total / 60) % 60;
  else out << total / 60;
  out << ":" << std::setw(2) << std::setfill('0') << total % 60;
  return out.str();
}

std::string format_rate(double r) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(r >= 1e4 ? 0 : 1);
  if (r >= 1e6) out << r / 1e6 << "M";
  else if (r >= 1e4) out << r / 1e3 << "k";
  else out << r;
  return out.str();
}

Progress::Progress(bool quiet, std::string unit)
    : quiet_(quiet), tty_(isatty(STDERR_FILENO) != 0), unit_(std::move(unit)), last_(Clock::now()) {}

void Progress::update(const std::string& text) {
  if (quiet_) return;
  const double since = seconds_since(last_);
  if (tty_) {
    if (since < 0.1) return;
    std::cerr << "\r\033[K" << text << std::flush;
    shown_ = true;
  } else {
    if (since < 30) return;
    std::cerr << text << "\n" << std::flush;
  }
  last_ = Clock::now();
}

void Progress::message(const std::string& text) {
  if (quiet_) return;
  if (tty_ && shown_) std::cerr << "\r\033[K";
  shown_ = false;
  std::cerr << text << "\n" << std::flush;
  last_ = Clock::now();  // the next plain progress line comes a period later
}

}  // namespace cellstate
