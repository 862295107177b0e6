#include "cellstate/data/word_split.h"

#include "cellstate/util/text.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace cellstate {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

constexpr std::array<std::string_view, 6> kOpeners{"(", "[", "{", "\"", "\xE2\x80\x9C", "\xC2\xAB"};  // “ «
constexpr std::array<std::string_view, 13> kClosers{")", "]", "}", "\"", ",", ";", ":", "!", "?",
                                                    "\xE2\x80\x9D", "\xC2\xBB", "'", "\xE2\x80\x99"};  // ” » ’
constexpr std::array<std::string_view, 7> kClitics{"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"};
constexpr std::array<std::string_view, 38> kAbbreviations{
    "mr.",   "mrs.", "ms.",  "dr.",  "prof.", "st.",  "jr.",  "sr.",  "gen.",  "col.",  "lt.",   "sgt.",  "rep.",
    "sen.",  "gov.", "inc.", "corp.", "co.",  "ltd.", "bros.", "no.", "vs.",  "jan.",  "feb.",  "mar.",  "apr.",
    "aug.",  "sep.", "sept.", "oct.", "nov.", "dec.", "mt.",  "ft.",  "etc.",  "approx.", "fig.", "p.m."};

template <typename List>
bool starts_with_any(std::string_view s, size_t at, std::string_view& match, const List& list) {
  for (auto p : list)
    if (s.substr(at, p.size()) == p) {
      match = p;
      return true;
    }
  return false;
}

// "J.", "U.S.", "a.m.", "Mr.", "Inc.": a word whose final "." belongs to it.
bool is_abbreviation(std::string_view word) {
  if (word.size() < 2 || word.back() != '.') return false;
  const std::string low = lowercase_ascii(word);
  if (std::find(kAbbreviations.begin(), kAbbreviations.end(), low) != kAbbreviations.end()) return true;
  // Letters separated by dots, each group one letter: J.  U.S.  a.m.  U.K.
  bool letter = false;
  for (size_t i = 0; i < word.size(); ++i) {
    const char c = word[i];
    if (std::isalpha(static_cast<unsigned char>(c))) {
      if (letter) return false;  // two letters in a row
      letter = true;
    } else if (c == '.') {
      if (!letter) return false;
      letter = false;
    } else {
      return false;
    }
  }
  return true;
}

struct Piece {
  size_t begin, end;
};

// Splits one whitespace-free chunk [b, e) of `text` into token ranges.
void split_chunk(std::string_view text, size_t b, size_t e, std::vector<Piece>& out) {
  std::vector<Piece> tail;  // trailing tokens, in reverse order
  std::string_view m;
  while (b < e && starts_with_any(text, b, m, kOpeners) && b + m.size() <= e) {
    out.push_back({b, b + m.size()});
    b += m.size();
  }
  for (bool again = true; again && b < e;) {
    again = false;
    for (auto p : kClosers) {
      if (e - b >= p.size() && text.substr(e - p.size(), p.size()) == p) {
        // An apostrophe ending "players'" is split, but not when it is the whole word.
        if (e - b == p.size()) break;
        tail.push_back({e - p.size(), e});
        e -= p.size();
        again = true;
        break;
      }
    }
    if (again) continue;
    const std::string_view word = text.substr(b, e - b);
    if (word.size() >= 2 && word.back() == '.') {
      size_t dots = 0;
      while (dots < word.size() && word[word.size() - 1 - dots] == '.') ++dots;
      if (dots >= 2 && dots < word.size()) {  // "wait..." -> "wait" "..."
        tail.push_back({e - dots, e});
        e -= dots;
        again = true;
      } else if (dots == 1 && !is_abbreviation(word)) {
        tail.push_back({e - 1, e});
        e -= 1;
        again = true;
      }
    }
  }
  if (b < e) {
    // Clitics: "Germany's" -> "Germany" "'s", "don't" -> "do" "n't" (straight or curly apostrophe).
    std::string low = lowercase_ascii(text.substr(b, e - b));
    const std::string curly = "\xE2\x80\x99";
    for (size_t at; (at = low.find(curly)) != std::string::npos;) low.replace(at, curly.size(), "'");
    size_t cut = std::string::npos;
    for (auto c : kClitics) {
      if (low.size() > c.size() && low.compare(low.size() - c.size(), c.size(), c) == 0) {
        cut = low.size() - c.size();
        break;
      }
    }
    if (cut != std::string::npos && cut > 0) {
      // Map the cut from `low` (curly apostrophes narrowed) back to bytes.
      const size_t suffix_chars = low.size() - cut;
      size_t split = e;
      for (size_t k = 0; k < suffix_chars; ++k) {
        --split;
        while (split > b && is_utf8_continuation(text[split])) --split;
      }
      out.push_back({b, split});
      out.push_back({split, e});
    } else {
      out.push_back({b, e});
    }
  }
  out.insert(out.end(), tail.rbegin(), tail.rend());
}

bool ends_sentence(std::string_view token) { return token == "." || token == "!" || token == "?" || token == "..."; }

bool is_closer(std::string_view token) {
  return token == ")" || token == "]" || token == "\"" || token == "'" || token == "\xE2\x80\x9D" ||
         token == "\xE2\x80\x99" || token == "\xC2\xBB";
}

bool may_start_sentence(std::string_view token, const WordSplitOptions& options) {
  const auto c = static_cast<unsigned char>(token[0]);
  if (c >= 0x80) return true;  // a non-ASCII letter or quote
  std::string_view m;
  return std::isupper(c) || std::isdigit(c) || (options.lowercase_starts && std::islower(c)) ||
         starts_with_any(token, 0, m, kOpeners);
}

}  // namespace

std::vector<TokenizedSentence> split_words(std::string_view text, const WordSplitOptions& options) {
  const std::vector<int64_t> chars = utf8_offsets(text);

  std::vector<TokenizedSentence> sentences;
  size_t line_start = 0;
  while (line_start <= text.size()) {
    size_t line_end = text.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = text.size();
    std::vector<Piece> pieces;
    for (size_t i = line_start; i < line_end;) {
      while (i < line_end && is_space(text[i])) ++i;
      size_t j = i;
      while (j < line_end && !is_space(text[j])) ++j;
      if (j > i) split_chunk(text, i, j, pieces);
      i = j;
    }
    TokenizedSentence sentence;
    for (size_t k = 0; k < pieces.size(); ++k) {
      const auto& p = pieces[k];
      sentence.push_back({std::string(text.substr(p.begin, p.end - p.begin)), p.begin, p.end, chars[p.begin],
                          chars[p.end]});
      if (k + 1 == pieces.size()) break;
      const std::string_view cur = sentence.back().text;
      const std::string_view prev = sentence.size() >= 2 ? std::string_view(sentence[sentence.size() - 2].text) : "";
      const bool final_punct = ends_sentence(cur) || (is_closer(cur) && ends_sentence(prev));
      const std::string_view next = text.substr(pieces[k + 1].begin, pieces[k + 1].end - pieces[k + 1].begin);
      // Closing quotes right after the punctuation (no space between) stay in
      // this sentence; a quote after a space opens the next one.
      const bool attached_closer = is_closer(next) && pieces[k + 1].begin == p.end;
      if (final_punct && !attached_closer && may_start_sentence(next, options)) {
        sentences.push_back(std::move(sentence));
        sentence.clear();
      }
    }
    if (!sentence.empty()) sentences.push_back(std::move(sentence));
    if (line_end == text.size()) break;
    line_start = line_end + 1;
  }
  return sentences;
}

std::vector<std::string> split_sentences(std::string_view text) {
  WordSplitOptions options;
  options.lowercase_starts = true;
  std::vector<std::string> out;
  for (const auto& sentence : split_words(text, options))
    out.emplace_back(text.substr(sentence.front().begin, sentence.back().end - sentence.front().begin));
  return out;
}

}  // namespace cellstate
