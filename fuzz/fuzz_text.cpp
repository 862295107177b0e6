// Fuzz target: the text layer. The UTF-8 checker against a reference
// decoder written here from RFC 3629 (no overlong forms, no surrogates,
// nothing above U+10FFFF); on valid text, the code-point helpers and the
// word splitter's offsets; and the tag schemes (tags read from the input:
// entities survive IOB1 / BIO / IOBES round trips).
#include <stdexcept>

#include "cellstate/data/tag_scheme.h"
#include "cellstate/data/word_split.h"
#include "cellstate/util/text.h"
#include "common.h"

namespace cs = cellstate;
using cellstate::fuzz::require;

namespace {

/// Byte offset of the first invalid UTF-8 sequence, or npos (RFC 3629).
size_t reference_invalid(const std::string& s) {
  size_t i = 0;
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  while (i < s.size()) {
    const unsigned c = b[i];
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3, cp = c & 0x07;
    } else {
      return i;
    }
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size() || (b[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (b[i + k] & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += n + 1;
  }
  return std::string::npos;
}

void check_text(const std::string& s) {
  const size_t bad = cs::find_invalid_utf8(s);
  require(bad == reference_invalid(s), "find_invalid_utf8 disagrees with the RFC 3629 reference");
  if (bad != std::string::npos) return;
  const auto chars = cs::utf8_chars(s);
  std::string joined;
  for (const auto& c : chars) joined += c;
  require(joined == s, "utf8_chars does not put the text back together");
  require(cs::utf8_length(s) == static_cast<int64_t>(chars.size()), "utf8_length differs from utf8_chars");
  require(cs::find_invalid_utf8(cs::lowercase_utf8(s)) == std::string::npos, "lowercase_utf8 made invalid UTF-8");
  for (const auto& w : cs::split_whitespace(s)) require(!w.empty(), "split_whitespace gave an empty word");
  if (s.find('\0') != std::string::npos) return;
  const auto offsets = cs::utf8_offsets(s);
  for (const auto& sentence : cs::split_words(s)) {
    require(!sentence.empty(), "split_words gave an empty sentence");
    for (const auto& t : sentence) {
      require(t.begin < t.end && t.end <= s.size(), "a token's byte offsets are outside the text");
      require(!t.text.empty(), "an empty token");
      require(t.char_begin < t.char_end && t.char_end <= static_cast<int64_t>(chars.size()),
              "a token's character offsets are outside the text");
      require(cs::utf8_length(s.substr(t.begin, t.end - t.begin)) == t.char_end - t.char_begin,
              "a token's byte and character offsets disagree");
    }
  }
  (void)offsets;
}

/// A tag sequence read from the bytes: each byte one tag among O and
/// B/I/E/S of two types.
std::vector<std::string> tags_of(const std::string& s) {
  static const char* kTags[] = {"O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"};
  std::vector<std::string> tags;
  for (unsigned char c : s) tags.push_back(kTags[c % 9]);
  return tags;
}

void check_tags(const std::string& s) {
  const auto tags = tags_of(s.substr(0, 64));
  const auto n = static_cast<int64_t>(tags.size());
  for (auto scheme : {cs::TagScheme::kIOB1, cs::TagScheme::kIOB2, cs::TagScheme::kIOBES}) {
    std::vector<cs::Span> spans;
    try {
      spans = cs::tags_to_spans(tags, scheme);
    } catch (const std::invalid_argument&) {
      continue;  // E-/S- in a BIO scheme: refused by name
    }
    for (const auto& sp : spans) require(0 <= sp.begin && sp.begin < sp.end && sp.end <= n, "a span outside the tags");
    for (auto other : {cs::TagScheme::kIOB1, cs::TagScheme::kIOB2, cs::TagScheme::kIOBES}) {
      const auto written = cs::spans_to_tags(spans, n, other);
      require(static_cast<int64_t>(written.size()) == n, "spans_to_tags changed the length");
      require(cs::tags_to_spans(written, other) == spans, "entities changed in a tag-scheme round trip");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  check_text(s);
  check_tags(s);
  return 0;
}
