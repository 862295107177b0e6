// Fuzz target: the data readers (classification in every format, CoNLL with
// and without tags, parallel text, plain lines, gzip). The first byte picks
// the reader (and the line reader's mode); the rest is the file. Bad input must be an InputError naming
// the file; what is read must be clean text (valid UTF-8, no NUL, no CR).
#include <zlib.h>

#include "cellstate/data/readers.h"
#include "cellstate/util/io.h"
#include "cellstate/util/text.h"
#include "common.h"

namespace cs = cellstate;
using cellstate::fuzz::require;
using cellstate::fuzz::scratch;

namespace {

void require_clean(const std::string& text) {
  require(cs::find_invalid_utf8(text) == std::string_view::npos, "a reader returned invalid UTF-8");
  require(text.find('\0') == std::string::npos, "a reader returned a NUL byte");
  require(text.find('\r') == std::string::npos, "a reader returned a carriage return");
}

std::string gzip_file(const std::string& name, const std::string& bytes) {
  const std::string path = scratch().dir() + "/" + name;
  gzFile f = gzopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (!bytes.empty()) gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
  return path;
}

void read_all(uint8_t mode, const std::string& bytes) {
  switch (mode % 10) {
    case 0:
    case 1:
    case 2: {
      const auto format = mode % 10 == 0 ? cs::ClassificationFormat::kAuto
                          : mode % 10 == 1 ? cs::ClassificationFormat::kTsv
                                          : cs::ClassificationFormat::kSst;
      for (const auto& e : cs::read_classification(scratch().write("c.txt", bytes), format)) {
        require(!e.label.empty(), "an empty label");
        require_clean(e.text);
        require_clean(e.label);
      }
      break;
    }
    case 3:
    case 4: {
      cs::ConllOptions o;
      o.has_tags = mode % 10 == 3;
      o.token_column = static_cast<int>(mode / 9 % 4) - 1;
      for (const auto& s : cs::read_conll(scratch().write("c.conll", bytes), o)) {
        require(!s.tokens.empty(), "an empty sentence");
        require(!o.has_tags || s.tags.size() == s.tokens.size(), "tags and tokens differ in number");
        for (const auto& t : s.tokens) require(!t.empty(), "an empty token"), require_clean(t);
      }
      break;
    }
    case 5: {
      const size_t half = bytes.size() / 2;
      const auto src = scratch().write("p.src", bytes.substr(0, half));
      const auto tgt = scratch().write("p.tgt", bytes.substr(half));
      cs::ParallelOptions o;
      o.max_words = mode / 9 % 3 * 5;
      for (const auto& p : cs::read_parallel(src, tgt, o)) require_clean(p.source), require_clean(p.target);
      break;
    }
    case 6:
      for (const auto& [n, line] : cs::read_lines(scratch().write("l.txt", bytes))) {
        require(n >= 1, "a line number below 1");
        require_clean(line);
      }
      break;
    case 7:
      for (const auto& [n, line] : cs::read_lines(gzip_file("l.txt.gz", bytes))) require_clean(line);
      break;
    case 8: {
      // Truncating long lines (use commands' input): a line is cut to at most
      // the cap, at a character boundary, and says how long it was.
      cs::LineReader reader(scratch().write("t.txt", bytes), 37, cs::LineReader::LongLines::kTruncate);
      std::string line;
      while (reader.next(line)) {
        require(line.size() <= 37, "a truncated line longer than the cap");
        require(reader.truncated_from() == 0 || reader.truncated_from() > static_cast<int64_t>(line.size()),
                "a truncated line's length before the cut is not larger than after");
        require_clean(line);
      }
      break;
    }
    default: {
      cs::LineReader reader(scratch().write("r.txt", bytes), 1 << 12);
      std::string line;
      int64_t last = 0;
      while (reader.next(line)) {
        require(reader.line_number() == last + 1, "line numbers are not consecutive");
        last = reader.line_number();
        require(line.size() <= (1 << 12), "a line longer than the reader's limit");
        require_clean(line);
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    read_all(data[0], bytes);
  } catch (const cs::InputError&) {
    // Bad input, named: what the readers must do.
  }
  return 0;
}
