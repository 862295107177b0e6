#pragma once
// Rule-based sentence splitting and word tokenisation of raw text, close to
// the tokenisation of the CoNLL-2003 (Reuters) data, with the byte and
// character offsets of every token in the input:
//
//   * tokens are separated at whitespace;
//   * punctuation , ; : ! ? ( ) [ ] { } " and quotes at word edges become
//     tokens of their own ("(Reuters)" -> "(" "Reuters" ")");
//   * a final "." is split off unless the word is an abbreviation: a single
//     letter ("J."), letters with inner dots ("U.S.", "a.m."), or a known
//     title/abbreviation ("Mr.", "Inc.", "Corp.", "Jan.", ...);
//   * the clitics 's 're 've 'll 'd 'm and n't become tokens ("Germany's" ->
//     "Germany" "'s", "don't" -> "do" "n't");
//   * hyphens, slashes, inner apostrophes and numbers ("1,200.50", "4-3",
//     "O'Neill") stay inside words;
//   * a sentence ends at a line break or after a token . ! ? ... (or one
//     followed by closing quotes/brackets) when the next token starts with an
//     upper-case letter, a digit or an opening quote/bracket (or, with
//     `lowercase_starts`, a lower-case letter: for case-folded text).
//
// This is the project's one sentence splitter: NER's raw-text input and
// sentiment's per-file predictions both use it.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cellstate {

struct WordToken {
  std::string text;
  size_t begin = 0;         // byte offset in the input
  size_t end = 0;           // one past the last byte
  int64_t char_begin = 0;   // code-point offset in the input
  int64_t char_end = 0;
};

using TokenizedSentence = std::vector<WordToken>;

struct WordSplitOptions {
  /// A lower-case word may start a sentence after . ! ? (default false:
  /// only an upper-case letter, a digit or an opening quote/bracket).
  bool lowercase_starts = false;
};

/// Tokens of `text` (valid UTF-8), grouped into sentences.
std::vector<TokenizedSentence> split_words(std::string_view text, const WordSplitOptions& options = {});

/// The sentences of `text` as the text each spans (first token to last),
/// with `lowercase_starts`: "Hi there. \"Go!\" he said." -> "Hi there.",
/// "\"Go!\"", "he said.".
std::vector<std::string> split_sentences(std::string_view text);

}  // namespace cellstate
