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

#include <string>
#include <vector>

namespace cellstate {

struct VocabularyEntry {
  std::string name;     // long name, without "--"
  bool flag = false;    // --NAME / --no-NAME (false: takes a value)
  std::string meaning;  // what it means in every command that offers it
};

/// Every entry, sorted by name.
const std::vector<VocabularyEntry>& option_vocabulary();

}  // namespace cellstate
