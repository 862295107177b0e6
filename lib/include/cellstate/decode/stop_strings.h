#pragma once
// Stop strings for streamed generation: text passes through as soon as it
// can no longer become part of a stop string; where one appears, the text
// before it is the output and the rest is dropped.

#include <functional>
#include <string>
#include <vector>

namespace cellstate {

class StopFilter {
 public:
  /// `out` (may be empty) receives the text as it becomes final.
  StopFilter(std::vector<std::string> stops, std::function<void(const std::string&)> out);

  /// Adds generated text; returns true when a stop string has appeared (the
  /// text before it has been passed on, the rest dropped).
  bool add(const std::string& text);
  /// Passes on what was held back (generation ended without a stop string).
  void flush();
  /// Everything passed on so far.
  const std::string& emitted() const { return emitted_; }

 private:
  void emit(const std::string& s);
  std::vector<std::string> stops_;
  std::function<void(const std::string&)> out_;
  std::string pending_;
  std::string emitted_;
};

}  // namespace cellstate
