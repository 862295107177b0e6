#include "cellstate/decode/stop_strings.h"

#include <algorithm>

namespace cellstate {

StopFilter::StopFilter(std::vector<std::string> stops, std::function<void(const std::string&)> out)
    : stops_(std::move(stops)), out_(std::move(out)) {}

bool StopFilter::add(const std::string& text) {
  pending_ += text;
  size_t first = std::string::npos;
  for (const auto& s : stops_)
    if (const size_t at = pending_.find(s); at != std::string::npos) first = std::min(first, at);
  if (first != std::string::npos) {
    emit(pending_.substr(0, first));
    pending_.clear();
    return true;
  }
  // Hold back the longest tail that is a prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_)
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  emit(pending_.substr(0, pending_.size() - hold));
  pending_.erase(0, pending_.size() - hold);
  return false;
}

void StopFilter::flush() {
  emit(pending_);
  pending_.clear();
}

void StopFilter::emit(const std::string& s) {
  if (s.empty()) return;
  emitted_ += s;
  if (out_) out_(s);
}

}  // namespace cellstate
