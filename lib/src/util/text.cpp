#include "cellstate/util/text.h"

#include <cctype>
#include <iomanip>
#include <sstream>

namespace cellstate {

size_t find_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += len;
  }
  return std::string_view::npos;
}

int64_t utf8_length(std::string_view text) {
  int64_t n = 0;
  for (const char c : text) n += !is_utf8_continuation(c);
  return n;
}

std::vector<std::string> utf8_chars(std::string_view text) {
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size();) {
    size_t j = i + 1;
    while (j < text.size() && is_utf8_continuation(text[j])) ++j;
    out.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

std::vector<int64_t> utf8_offsets(std::string_view text) {
  std::vector<int64_t> offsets(text.size() + 1, 0);
  int64_t count = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    offsets[i] = count;
    if (!is_utf8_continuation(text[i])) ++count;
  }
  offsets[text.size()] = count;
  return offsets;
}

std::string lowercase_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += static_cast<char>(std::tolower(c));
    } else if (c == 0xC3 && i + 1 < s.size()) {
      const auto d = static_cast<unsigned char>(s[i + 1]);
      // U+00C0..U+00DE except U+00D7 (multiplication sign) -> +0x20
      out += static_cast<char>(c);
      out += static_cast<char>(d >= 0x80 && d <= 0x9E && d != 0x97 ? d + 0x20 : d);
      ++i;
    } else if ((c == 0xC4 || c == 0xC5) && i + 1 < s.size()) {
      // Latin Extended-A: mostly uppercase at even code points.
      const auto d = static_cast<unsigned char>(s[i + 1]);
      const uint32_t cp = ((c & 0x1Fu) << 6) | (d & 0x3Fu);
      uint32_t lower = cp;
      if ((cp >= 0x100 && cp <= 0x137) || (cp >= 0x14A && cp <= 0x177)) lower = cp | 1u;
      else if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E)) lower = (cp % 2) ? cp + 1 : cp;
      if (cp == 0x178) lower = 0xFF;
      if (lower < 0x100) {
        out += static_cast<char>(0xC3);
        out += static_cast<char>(0x80 | (lower & 0x3F));
      } else {
        out += static_cast<char>(0xC0 | (lower >> 6));
        out += static_cast<char>(0x80 | (lower & 0x3F));
      }
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string lowercase_ascii(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> split_whitespace(std::string_view text) {
  std::vector<std::string> out;
  size_t i = 0;
  const auto space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  while (i < text.size()) {
    while (i < text.size() && space(text[i])) ++i;
    const size_t start = i;
    while (i < text.size() && !space(text[i])) ++i;
    if (i > start) out.emplace_back(text.substr(start, i - start));
  }
  return out;
}

std::string format_fixed(double value, int digits) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << value;
  return out.str();
}

}  // namespace cellstate
