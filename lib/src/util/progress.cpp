#include "cellstate/util/progress.h"

#include <algorithm>
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

CountProgress::CountProgress(bool quiet, std::string unit, int64_t total)
    : active_(!quiet && isatty(STDERR_FILENO) != 0), unit_(std::move(unit)), total_(total),
      start_(Clock::now()), last_(start_) {}

CountProgress::~CountProgress() {
  if (drawn_) std::cerr << "\r\033[K" << std::flush;
}

void CountProgress::add(int64_t n) {
  done_ += n;
  if (!active_ || seconds_since(last_) < 0.1) return;
  last_ = Clock::now();
  const double elapsed = seconds_since(start_);
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  std::ostringstream line;
  if (total_ > 0) {
    const int width = 20;
    const int filled = static_cast<int>(width * std::min(done_, total_) / total_);
    line << "[" << std::string(static_cast<size_t>(filled), '#') << std::string(static_cast<size_t>(width - filled), '.')
         << "] " << done_ << "/" << total_ << " " << unit_ << " " << format_rate(rate) << "/s ETA "
         << format_duration(rate > 0 ? static_cast<double>(total_ - done_) / rate : -1);
  } else {
    line << done_ << " " << unit_ << " " << format_rate(rate) << "/s";
  }
  std::cerr << "\r\033[K" << line.str() << std::flush;
  drawn_ = true;
}

}  // namespace cellstate
