#include "cellstate/data/readers.h"

#include "cellstate/util/io.h"
#include "cellstate/util/text.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>
#include <stdexcept>

namespace cellstate {

namespace {

bool is_blank(const std::string& s) {
  return s.find_first_not_of(" \t\r\f\v") == std::string::npos;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\f\v");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r\f\v");
  return s.substr(b, e - b + 1);
}

void read_classification_file(const std::string& path, ClassificationFormat format,
                              std::vector<ClassificationExample>& out, ReadStats& stats) {
  LineReader reader(path);
  std::string line;
  while (reader.next(line)) {
    if (is_blank(line)) {
      ++stats.skipped_empty;
      continue;
    }
    if (format == ClassificationFormat::kAuto) {
      // A tab: LABEL<TAB>TEXT. No tab: SST style, whose labels are numbers;
      // a line starting with a word is more likely unlabelled text than a
      // word label (which --input-format sst still reads).
      if (line.find('\t') != std::string::npos) {
        format = ClassificationFormat::kTsv;
      } else {
        const std::string first = trim(line).substr(0, trim(line).find(' '));
        if (first.empty() || first.find_first_not_of("0123456789-") != std::string::npos)
          throw reader.error("expected labelled text: LABEL<TAB>TEXT (found no tab) or SST style 'NUMBER TEXT' "
                             "(found '" + first.substr(0, 40) + "'); for word labels before a space, give "
                             "--input-format sst");
        format = ClassificationFormat::kSst;
      }
    }
    ClassificationExample ex;
    ex.source = reader.path();
    ex.line = reader.line_number();
    if (format == ClassificationFormat::kTsv) {
      const size_t tab = line.find('\t');
      if (tab == std::string::npos)
        throw reader.error("expected LABEL<TAB>TEXT, found no tab");
      ex.label = trim(line.substr(0, tab));
      ex.text = trim(line.substr(tab + 1));
      if (ex.label.empty()) throw reader.error("expected LABEL<TAB>TEXT, the label is empty");
      if (ex.text.empty()) throw reader.error("expected LABEL<TAB>TEXT, the text is empty");
    } else {
      const std::string t = trim(line);
      const size_t space = t.find_first_of(" \t");
      if (space == std::string::npos)
        throw reader.error("expected LABEL TEXT (a label, a space, then the text), found one field");
      ex.label = t.substr(0, space);
      ex.text = trim(t.substr(space + 1));
    }
    out.push_back(std::move(ex));
  }
}

void read_classification_directory(const std::string& dir, std::vector<ClassificationExample>& out,
                                   ReadStats& stats) {
  namespace fs = std::filesystem;
  std::vector<fs::path> label_dirs;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory()) label_dirs.push_back(entry.path());
  std::sort(label_dirs.begin(), label_dirs.end());
  if (label_dirs.empty())
    throw InputError(dir, 0, "expected one folder per label (DIR/LABEL/FILE), found none");
  for (const auto& label_dir : label_dirs) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(label_dir))
      if (entry.is_regular_file()) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      LineReader reader(file.string());
      std::string text, line;
      while (reader.next(line)) {
        if (!text.empty()) text += '\n';
        text += line;
      }
      if (is_blank(text)) {
        ++stats.skipped_empty;
        continue;
      }
      out.push_back({trim(text), label_dir.filename().string(), file.string(), 0});
    }
  }
}

}  // namespace

std::string ReadStats::summary() const {
  std::vector<std::string> parts;
  if (skipped_empty) parts.push_back(std::to_string(skipped_empty) + " skipped (empty)");
  if (skipped_long) parts.push_back(std::to_string(skipped_long) + " dropped (too long)");
  if (truncated) parts.push_back(std::to_string(truncated) + " truncated");
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? ", " : "") + parts[i];
  return out;
}

ClassificationFormat parse_classification_format(const std::string& name) {
  const std::string n = lowercase_ascii(name);
  if (n == "auto") return ClassificationFormat::kAuto;
  if (n == "tsv") return ClassificationFormat::kTsv;
  if (n == "sst") return ClassificationFormat::kSst;
  if (n == "dir" || n == "directory") return ClassificationFormat::kDirectory;
  throw std::invalid_argument("format must be auto, tsv, sst or dir, got '" + name + "'");
}

std::vector<ClassificationExample> read_classification(const std::string& path,
                                                       ClassificationFormat format,
                                                       ReadStats* stats) {
  ReadStats local;
  ReadStats& st = stats ? *stats : local;
  std::vector<ClassificationExample> out;
  if (path != "-" && !file_exists(path)) throw InputError(path, 0, "no such file or directory");
  const bool dir = path != "-" && is_directory(path);
  if (format == ClassificationFormat::kDirectory && !dir)
    throw InputError(path, 0, "expected a directory with one folder per label");
  if (dir && format != ClassificationFormat::kAuto && format != ClassificationFormat::kDirectory)
    throw InputError(path, 0, "is a directory, expected a file");
  if (dir)
    read_classification_directory(path, out, st);
  else
    read_classification_file(path, format, out, st);
  if (out.empty()) throw InputError(path, 0, "no examples (empty input)");
  st.examples += static_cast<int64_t>(out.size());
  return out;
}

LabelSet::LabelSet(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  names_ = std::move(names);
  for (size_t i = 0; i < names_.size(); ++i) ids_[names_[i]] = static_cast<int64_t>(i);
}

LabelSet LabelSet::from_examples(const std::vector<ClassificationExample>& examples) {
  std::vector<std::string> names;
  for (const auto& ex : examples) names.push_back(ex.label);
  return LabelSet(std::move(names));
}

int64_t LabelSet::find(const std::string& name) const {
  const auto it = ids_.find(name);
  return it == ids_.end() ? -1 : it->second;
}

int64_t LabelSet::id(const std::string& name, const std::string& file, int64_t line) const {
  const int64_t i = find(name);
  if (i < 0) {
    std::string known;
    for (size_t k = 0; k < names_.size(); ++k) known += (k ? ", " : "") + names_[k];
    throw InputError(file, line, "unknown label '" + name + "', expected one of: " + known);
  }
  return i;
}

// ---------------------------------------------------------------- CoNLL

std::vector<ConllSentence> read_conll(const std::string& path, const ConllOptions& options,
                                      ReadStats* stats) {
  ReadStats local;
  ReadStats& st = stats ? *stats : local;
  LineReader reader(path);
  std::vector<ConllSentence> out;
  ConllSentence current;
  size_t columns = 0;
  int64_t columns_line = 0;
  auto flush = [&] {
    if (!current.tokens.empty()) out.push_back(std::move(current));
    current = ConllSentence{};
  };
  auto resolve = [](int column, size_t n) -> int64_t {
    return column < 0 ? static_cast<int64_t>(n) + column : column;
  };
  std::string line;
  while (reader.next(line)) {
    if (is_blank(line)) {
      flush();
      continue;
    }
    auto fields = split_whitespace(line);
    if (fields[0] == "-DOCSTART-") {
      flush();
      continue;
    }
    if (columns == 0) {
      columns = fields.size();
      columns_line = reader.line_number();
      const int64_t tok = resolve(options.token_column, columns);
      const int64_t tag = resolve(options.tag_column, columns);
      const size_t need = static_cast<size_t>(
          std::max(tok, options.has_tags ? tag : int64_t{0}) + 1);
      if (tok < 0 || (options.has_tags && tag < 0) || columns < need ||
          (options.has_tags && tok == tag))
        throw reader.error("expected token column " + std::to_string(options.token_column) +
                           (options.has_tags ? " and tag column " + std::to_string(options.tag_column)
                                             : std::string()) +
                           ", found " + std::to_string(columns) + " column(s)");
    } else if (fields.size() != columns) {
      throw reader.error("expected " + std::to_string(columns) + " columns like line " +
                         std::to_string(columns_line) + ", found " + std::to_string(fields.size()));
    }
    if (current.tokens.empty()) current.line = reader.line_number();
    current.tokens.push_back(fields[static_cast<size_t>(resolve(options.token_column, columns))]);
    if (options.has_tags) {
      std::string tag = fields[static_cast<size_t>(resolve(options.tag_column, columns))];
      if (tag != "O" && (tag.size() < 3 || tag[1] != '-' ||
                         std::string("BIES").find(tag[0]) == std::string::npos))
        throw reader.error("expected a tag O or B-/I-/E-/S-TYPE in column " +
                           std::to_string(resolve(options.tag_column, columns) + 1) + ", found '" +
                           tag + "'");
      current.tags.push_back(std::move(tag));
    }
  }
  flush();
  if (out.empty()) throw InputError(reader.path(), 0, "no sentences (empty input)");
  st.examples += static_cast<int64_t>(out.size());
  return out;
}

// ---------------------------------------------------------------- parallel

std::vector<SentencePair> read_parallel(const std::string& source_path,
                                        const std::string& target_path,
                                        const ParallelOptions& options, ReadStats* stats) {
  ReadStats local;
  ReadStats& st = stats ? *stats : local;
  LineReader src(source_path), tgt(target_path);
  std::vector<SentencePair> out;
  std::string s, t;
  for (;;) {
    const bool has_s = src.next(s);
    const bool has_t = tgt.next(t);
    if (has_s != has_t) {
      LineReader& longer = has_s ? src : tgt;
      std::string rest;
      while (longer.next(rest)) {
      }
      const int64_t ns = src.line_number();
      const int64_t nt = tgt.line_number();
      throw InputError(source_path, 0,
                       "has " + std::to_string(ns) + " lines but " + target_path + " has " +
                           std::to_string(nt) + " (expected line-aligned parallel files)");
    }
    if (!has_s) break;
    if (is_blank(s) || is_blank(t)) {
      ++st.skipped_empty;
      continue;
    }
    if (options.max_words > 0 &&
        (static_cast<int64_t>(split_whitespace(s).size()) > options.max_words ||
         static_cast<int64_t>(split_whitespace(t).size()) > options.max_words)) {
      ++st.skipped_long;
      continue;
    }
    out.push_back({trim(s), trim(t), src.line_number()});
  }
  if (out.empty()) {
    std::string why = st.summary().empty() ? "empty input" : st.summary();
    if (st.skipped_long) why += "; the limit is " + std::to_string(options.max_words) + " words a side";
    throw InputError(source_path, 0, "no sentence pairs left (" + why + ")");
  }
  st.examples += static_cast<int64_t>(out.size());
  return out;
}

std::vector<std::pair<int64_t, std::string>> read_lines(const std::string& path, ReadStats* stats) {
  ReadStats local;
  ReadStats& st = stats ? *stats : local;
  LineReader reader(path);
  std::vector<std::pair<int64_t, std::string>> out;
  std::string line;
  while (reader.next(line)) {
    if (is_blank(line)) {
      ++st.skipped_empty;
      continue;
    }
    out.emplace_back(reader.line_number(), line);
  }
  st.examples += static_cast<int64_t>(out.size());
  return out;
}

}  // namespace cellstate
