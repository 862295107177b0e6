#pragma once
// Reading the inputs of a use command (predict, translate): every input file
// in turn ("-" is standard input), line by line in batches, each batch's
// results written as soon as it is done, and a bad input reported in one
// line while the others are still processed.

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "cellstate/util/progress.h"

namespace cellstate {

/// A line of an input and its 1-based number.
struct NumberedLine {
  int64_t number = 0;
  std::string text;
};

/// The cap on the length of one input line of a use command: a longer line
/// is cut to its first kMaxInputLineBytes bytes (at a character boundary)
/// with a FILE:LINE warning, so no single line can make a command's memory
/// or time unbounded.
constexpr size_t kMaxInputLineBytes = size_t{1} << 20;  // 1 MiB

/// Runs `read(path)` for each of `inputs`. A bad input (an InputError: a
/// missing file, invalid UTF-8, ...) is reported on `err` as
/// "PREFIX: FILE:LINE: message" (without "PREFIX: " when `error_prefix` is
/// empty) and the next input is read. Returns 2 if any input failed, else 0.
int for_each_input(const std::vector<std::string>& inputs, const std::string& error_prefix, std::ostream& err,
                   const std::function<void(const std::string& path)>& read);

/// Streams the lines of `path` to `process` in batches of at most
/// `batch_lines`. A batch also ends where the input has nothing more to give
/// yet (standard input from a terminal or another program), so each line is
/// answered as soon as it arrives, while a large file or a fast pipe is still
/// read in full batches; `progress` (if given) counts the lines. A line
/// longer than kMaxInputLineBytes is cut, with "PREFIX: warning: FILE:LINE:
/// ..." on `warnings` (if given). When a line is bad, the lines before it are
/// processed first, then the InputError propagates.
void stream_lines(const std::string& path, size_t batch_lines,
                  const std::function<void(const std::vector<NumberedLine>& batch)>& process,
                  CountProgress* progress = nullptr, std::ostream* warnings = nullptr,
                  const std::string& error_prefix = "");

}  // namespace cellstate
