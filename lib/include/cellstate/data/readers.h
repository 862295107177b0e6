#pragma once
// Dataset readers. All stream their files through LineReader, so invalid
// UTF-8, NUL bytes and absurdly long lines are errors naming file and line.
//
// Defined behaviour (documented in README "Data formats"):
// - invalid UTF-8: an error, never a silent repair (a corrupt corpus should be
//   fixed, e.g. with iconv, not trained on).
// - empty or blank lines: skipped and counted in ReadStats::skipped_empty for
//   classification and parallel data (a pair is dropped when either side is
//   empty); sentence separators in CoNLL; kept as-is in plain text.
// - over-long inputs: parallel pairs with a side longer than max_words are
//   dropped and counted (truncating one side would make a wrong translation);
//   classification texts and CoNLL sentences are read whole, and the app
//   truncates token sequences at --max-length, counting them.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cellstate/data/tag_scheme.h"

namespace cellstate {

/// What a reader skipped or changed, for the user to see.
struct ReadStats {
  int64_t examples = 0;        // examples returned
  int64_t skipped_empty = 0;   // blank lines / empty documents skipped
  int64_t skipped_long = 0;    // dropped for exceeding a length limit
  int64_t truncated = 0;       // shortened to a length limit (set by apps)
  /// "N skipped (empty), M dropped (too long), K truncated" or "".
  std::string summary() const;
};

// ---------------------------------------------------------------- classification

enum class ClassificationFormat {
  kAuto,       // a directory -> kDirectory; a file -> kTsv if its first text line has a tab, else kSst
  kTsv,        // LABEL<TAB>TEXT
  kSst,        // LABEL TEXT (label is the first whitespace-separated field)
  kDirectory,  // DIR/LABEL/FILE: one document per file, label from the folder
};
ClassificationFormat parse_classification_format(const std::string& name);

struct ClassificationExample {
  std::string text;
  std::string label;
  std::string source;  // file the example came from
  int64_t line = 0;    // its line (0 for one-document files)
};

std::vector<ClassificationExample> read_classification(
    const std::string& path, ClassificationFormat format = ClassificationFormat::kAuto,
    ReadStats* stats = nullptr);

/// Label names <-> ids; ids follow the sorted order of the names.
class LabelSet {
 public:
  LabelSet() = default;
  explicit LabelSet(std::vector<std::string> names);  // sorted and de-duplicated
  static LabelSet from_examples(const std::vector<ClassificationExample>& examples);
  int64_t size() const { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }
  const std::string& name(int64_t id) const { return names_.at(static_cast<size_t>(id)); }
  /// -1 when unknown.
  int64_t find(const std::string& name) const;
  /// InputError naming `file`:`line` when unknown.
  int64_t id(const std::string& name, const std::string& file, int64_t line) const;

 private:
  std::vector<std::string> names_;
  std::map<std::string, int64_t> ids_;
};

// ---------------------------------------------------------------- CoNLL

struct ConllOptions {
  int token_column = 0;    // 0-based; negative counts from the end
  int tag_column = -1;     // 0-based; negative counts from the end (-1: last)
  bool has_tags = true;    // false: one column of tokens is enough
};

struct ConllSentence {
  std::vector<std::string> tokens;
  std::vector<std::string> tags;  // empty when !has_tags
  int64_t line = 0;               // line of the first token
};

/// Whitespace-separated columns, one token per line, sentences separated by
/// blank lines; -DOCSTART- lines are skipped. Every token line must have the
/// same number of columns as the file's first one.
std::vector<ConllSentence> read_conll(const std::string& path, const ConllOptions& options = {},
                                      ReadStats* stats = nullptr);

// ---------------------------------------------------------------- parallel text

struct ParallelOptions {
  int64_t max_words = 0;  // drop pairs with a side longer than this (0: no limit)
};

struct SentencePair {
  std::string source;
  std::string target;
  int64_t line = 0;
};

/// Line N of `source_path` translates line N of `target_path` (either may be
/// .gz). Different line counts are an InputError giving both counts.
std::vector<SentencePair> read_parallel(const std::string& source_path,
                                        const std::string& target_path,
                                        const ParallelOptions& options = {},
                                        ReadStats* stats = nullptr);

/// Non-empty lines of a text file, in order, each with its line number.
std::vector<std::pair<int64_t, std::string>> read_lines(const std::string& path,
                                                        ReadStats* stats = nullptr);

}  // namespace cellstate
