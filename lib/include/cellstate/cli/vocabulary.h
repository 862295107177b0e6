#pragma once
// The command line's one vocabulary: every option name any app offers, with
// the single meaning it has wherever it appears (README "Command line").
// An option a command adds must use a name from here in this meaning, or add
// one; tests/apps/cli_vocabulary.sh checks every app's --help against it.
//
// Conventions it encodes: input files are positional (FILES..., "-" or none
// for standard input); --format is always an output format and
// --input-format an input format; --output is a file written beside the
// main output; booleans are --NAME / --no-NAME; the sampling options are
// spelled the same in every app that samples.

#include <optional>
#include <string>
#include <vector>

namespace cellstate {

/// The values a numeric option accepts, checked when the command line is
/// parsed (NaN and infinities are never accepted). A command may narrow it
/// (sentiment's --top-k starts at 1), never widen it.
struct Range {
  double min = 0;
  double max = 0;
  bool min_open = false;  // (min, ...: min itself excluded
  bool max_open = false;  // ..., max): max itself excluded
  /// "[1, 64]", "(0, 1]", "[0, 1)".
  std::string to_string() const;
  bool contains(double v) const;
};

struct VocabularyEntry {
  std::string name;     // long name, without "--"
  bool flag = false;    // --NAME / --no-NAME (false: takes a value)
  std::string meaning;  // what it means in every command that offers it
  std::optional<Range> range = std::nullopt;  // a numeric option's values
};

/// Every entry, sorted by name.
const std::vector<VocabularyEntry>& option_vocabulary();

/// The entry named `name`, or nullptr.
const VocabularyEntry* find_in_vocabulary(const std::string& name);


}  // namespace cellstate
