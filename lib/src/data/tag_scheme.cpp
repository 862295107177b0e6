#include "cellstate/data/tag_scheme.h"

#include <algorithm>
#include <stdexcept>

#include "cellstate/util/text.h"

namespace cellstate {

TagScheme parse_tag_scheme(const std::string& name) {
  const std::string n = lowercase_ascii(name);
  if (n == "iob1") return TagScheme::kIOB1;
  if (n == "iob2" || n == "bio") return TagScheme::kIOB2;
  if (n == "iobes" || n == "bioes") return TagScheme::kIOBES;
  throw std::invalid_argument("tag scheme must be iob1, bio (iob2) or iobes, got '" + name + "'");
}

std::string to_string(TagScheme scheme) {
  switch (scheme) {
    case TagScheme::kIOB1: return "iob1";
    case TagScheme::kIOB2: return "bio";
    case TagScheme::kIOBES: return "iobes";
  }
  return "?";
}

std::vector<Span> tags_to_spans(const std::vector<std::string>& tags, TagScheme scheme) {
  std::vector<Span> spans;
  bool open = false;
  Span cur;
  auto close = [&](int64_t end) {
    if (open) {
      cur.end = end;
      spans.push_back(cur);
      open = false;
    }
  };
  for (size_t i = 0; i < tags.size(); ++i) {
    const auto pos = static_cast<int64_t>(i);
    const std::string& tag = tags[i];
    if (tag == "O") {
      close(pos);
      continue;
    }
    if (tag.size() < 3 || tag[1] != '-')
      throw std::invalid_argument("tag '" + tag + "' at position " + std::to_string(i + 1) +
                                  " is neither O nor P-TYPE");
    const char p = tag[0];
    const std::string type = tag.substr(2);
    const bool continues = open && cur.type == type;
    switch (p) {
      case 'B':
        close(pos);
        cur = {pos, pos, type};
        open = true;
        break;
      case 'I':
        if (!continues) {
          close(pos);
          cur = {pos, pos, type};
          open = true;
        }
        break;
      case 'E':
      case 'S':
        if (scheme != TagScheme::kIOBES)
          throw std::invalid_argument("tag '" + tag + "' at position " + std::to_string(i + 1) +
                                      " is IOBES, but the scheme is " + to_string(scheme));
        if (!(p == 'E' && continues)) {
          close(pos);
          cur = {pos, pos, type};
          open = true;
        }
        close(pos + 1);
        break;
      default:
        throw std::invalid_argument("tag '" + tag + "' at position " + std::to_string(i + 1) +
                                    " has prefix " + std::string(1, p) + ", expected B, I, E or S");
    }
  }
  close(static_cast<int64_t>(tags.size()));
  return spans;
}

std::vector<std::string> spans_to_tags(const std::vector<Span>& spans, int64_t length,
                                       TagScheme scheme) {
  std::vector<std::string> tags(static_cast<size_t>(length), "O");
  int64_t previous_end = -1;
  std::string previous_type;
  auto sorted = spans;
  std::sort(sorted.begin(), sorted.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (const auto& s : sorted) {
    if (s.begin < 0 || s.end > length || s.begin >= s.end)
      throw std::invalid_argument("span [" + std::to_string(s.begin) + ", " +
                                  std::to_string(s.end) + ") outside a sentence of " +
                                  std::to_string(length) + " tokens");
    if (s.begin < previous_end) throw std::invalid_argument("overlapping spans");
    for (int64_t i = s.begin; i < s.end; ++i) {
      const auto k = static_cast<size_t>(i);
      const bool first = i == s.begin, last = i == s.end - 1;
      switch (scheme) {
        case TagScheme::kIOB1:
          tags[k] = (first && previous_end == s.begin && previous_type == s.type ? "B-" : "I-") + s.type;
          break;
        case TagScheme::kIOB2:
          tags[k] = (first ? "B-" : "I-") + s.type;
          break;
        case TagScheme::kIOBES:
          tags[k] = (first && last ? "S-" : first ? "B-" : last ? "E-" : "I-") + s.type;
          break;
      }
    }
    previous_end = s.end;
    previous_type = s.type;
  }
  return tags;
}

std::vector<std::string> convert_tags(const std::vector<std::string>& tags, TagScheme from,
                                      TagScheme to) {
  return spans_to_tags(tags_to_spans(tags, from), static_cast<int64_t>(tags.size()), to);
}

}  // namespace cellstate
