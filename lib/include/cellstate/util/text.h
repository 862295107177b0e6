#pragma once
// Text helpers: UTF-8 validation and code points, whitespace splitting,
// case folding and number formatting. Every other file uses these instead of
// decoding UTF-8 bytes itself.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cellstate {

/// Whether `byte` continues a multi-byte UTF-8 sequence (10xxxxxx).
constexpr bool is_utf8_continuation(char byte) { return (static_cast<unsigned char>(byte) & 0xC0) == 0x80; }

/// Index of the first byte that is not part of valid UTF-8 (overlong forms,
/// surrogates and code points above U+10FFFF are invalid), or npos.
size_t find_invalid_utf8(std::string_view text);

/// Number of code points of valid UTF-8 text.
int64_t utf8_length(std::string_view text);

/// The code points of valid UTF-8 text, each as its bytes ("Gruß" ->
/// "G" "r" "u" "ß").
std::vector<std::string> utf8_chars(std::string_view text);

/// Code-point offset of every byte position of valid UTF-8 text:
/// result[i] is the number of code points that start before byte i
/// (size text.size() + 1).
std::vector<int64_t> utf8_offsets(std::string_view text);

/// Lowercases ASCII and the Latin-1 Supplement / Latin Extended-A letters
/// (what European MT test sets use); other scripts are left unchanged.
std::string lowercase_utf8(std::string_view text);

/// ASCII letters lowercased, every other byte unchanged.
std::string lowercase_ascii(std::string_view text);

/// Fields separated by runs of ASCII whitespace (like Python's str.split()
/// on ASCII text).
std::vector<std::string> split_whitespace(std::string_view text);

/// `value` with `digits` digits after the point ("82.34").
std::string format_fixed(double value, int digits);

}  // namespace cellstate
