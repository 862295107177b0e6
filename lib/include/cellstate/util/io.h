#pragma once
// Files: errors that name the file and line, UTF-8 checked line reading
// (plain or gzip, transparently), atomic writes and temporary directories.
// The UTF-8 and text helpers themselves are in util/text.h.

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace cellstate {

/// Bad input from a user's file: what() is "FILE:LINE: MESSAGE" (or
/// "FILE: MESSAGE" when no line applies, line == 0). Apps map it to exit 2.
class InputError : public std::runtime_error {
 public:
  InputError(std::string file, int64_t line, const std::string& message);
  const std::string& file() const { return file_; }
  int64_t line() const { return line_; }

 private:
  std::string file_;
  int64_t line_;
};

/// Reads a text file line by line; "-" is standard input. Gzip-compressed
/// input (any name, standard input too) is decompressed transparently. Each line has its "\n" or
/// "\r\n" removed, and a UTF-8 byte-order mark at the start of the file is
/// dropped. A line that is not valid UTF-8, contains a NUL byte or a carriage
/// return elsewhere than before its "\n" (CR-only line endings) is an
/// InputError naming file and line: cellstate never guesses an encoding or
/// silently alters text. A line longer than `max_line_bytes` is an InputError
/// too (LongLines::kError), or is cut to its first `max_line_bytes` bytes
/// (back to a character boundary) with the rest skipped as it is read, so
/// memory stays bounded (LongLines::kTruncate; truncated_from() tells the
/// caller, which warns).
class LineReader {
 public:
  static constexpr size_t kDefaultMaxLineBytes = size_t{1} << 22;  // 4 MiB
  enum class LongLines { kError, kTruncate };

  explicit LineReader(const std::string& path, size_t max_line_bytes = kDefaultMaxLineBytes,
                      LongLines long_lines = LongLines::kError);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  /// Reads the next line into `line`; false at end of file. Standard input
  /// is read as it arrives, so a complete line is returned as soon as it is
  /// there (a terminal, or another program writing a line at a time).
  bool next(std::string& line);
  /// Whether next() would return without waiting for input: a complete line
  /// is buffered, the input has ended, more input is already there, or the
  /// input is a file. Lets a reader batch what is available and answer the
  /// rest at once.
  bool ready() const;
  /// 1-based number of the line last returned (0 before the first).
  int64_t line_number() const { return line_; }
  /// The length in bytes the line last returned had before it was cut (0
  /// when it was not).
  int64_t truncated_from() const { return truncated_from_; }
  const std::string& path() const { return path_; }
  /// An InputError for the line last returned.
  InputError error(const std::string& message) const { return InputError(path_, line_, message); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  int64_t line_ = 0;
  int64_t truncated_from_ = 0;
  size_t max_line_bytes_;
  LongLines long_lines_;
};

/// Whole file as bytes (gzip decompressed); InputError when missing/unreadable.
std::string read_file(const std::string& path);

/// Whole text file, UTF-8 checked like LineReader (errors give the line).
std::string read_text_file(const std::string& path);

bool file_exists(const std::string& path);
bool is_directory(const std::string& path);

/// A file that could not be written (a full disk, an I/O error, no
/// permission): what() is "DIR: cannot write NAME: REASON". Apps map it to
/// exit 1; whatever was there before stays as it was.
class WriteError : public std::runtime_error {
 public:
  WriteError(const std::string& path, const std::string& reason);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// Writes `bytes` to `path` atomically: a temporary file PATH.tmp.PID in the
/// same directory, written and fsync'ed with every error checked, then
/// renamed over `path` and the directory fsync'ed. On any failure the
/// temporary is removed, `path` is left as it was, and a WriteError is
/// thrown. Temporaries of `path` left by killed processes are removed first.
void atomic_write(const std::string& path, std::string_view bytes);

/// Same, for writers that need a path: `write(tmp)` writes the temporary file,
/// which is then fsync'ed and renamed over `path` (and removed if anything
/// throws).
void atomic_write_with(const std::string& path, const std::function<void(const std::string&)>& write);

/// Appends `text` to `path` (created if missing); a failed write is a
/// WriteError (a partial line is cut off again).
void append_to_file(const std::string& path, std::string_view text);

/// fsync()s the file or directory `path`; a failure is a WriteError.
void sync_path(const std::string& path);

/// Whether `pid` is a running process (false for 0 and negatives).
bool process_alive(int64_t pid);

/// Removes "NAME.tmp.PID" files in `dir` whose process is gone (left by a
/// killed writer) -- only those of NAME `of_file` when given; returns how
/// many were removed.
int remove_stale_temporaries(const std::string& dir, const std::string& of_file = "");

/// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "cellstate");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace cellstate
