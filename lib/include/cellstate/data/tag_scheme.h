#pragma once
// Tag schemes of entity (chunk) tags and the entities they encode:
//   IOB1  I-X inside (or starting) an entity, B-X only to start an entity
//         right after another of the same type (CoNLL-2003's files)
//   IOB2  ("bio") B-X starts every entity, I-X continues it
//   IOBES B-X begins, I-X continues, E-X ends a multi-token entity; S-X is a
//         single-token entity
// The CRF's transition constraints, the tagger and the chunk scorer all
// read tags through this header.

#include <cstdint>
#include <string>
#include <vector>

namespace cellstate {

enum class TagScheme { kIOB1, kIOB2, kIOBES };
/// "iob1", "iob2" or "bio", "iobes" (case-insensitive).
TagScheme parse_tag_scheme(const std::string& name);
std::string to_string(TagScheme scheme);

/// An entity: tokens [begin, end) of type `type`.
struct Span {
  int64_t begin = 0;
  int64_t end = 0;
  std::string type;
  bool operator==(const Span& o) const { return begin == o.begin && end == o.end && type == o.type; }
};

/// The entities of a tag sequence. Reading is lenient the way conlleval is:
/// an I- that does not continue an entity of its type starts one; in IOBES an
/// E- or S- ends its entity. Tags are "O" or "P-TYPE" with P in B, I, E, S;
/// anything else throws std::invalid_argument.
std::vector<Span> tags_to_spans(const std::vector<std::string>& tags, TagScheme scheme);
/// The tags of entities (which must not overlap) in `scheme`.
std::vector<std::string> spans_to_tags(const std::vector<Span>& spans, int64_t length,
                                       TagScheme scheme);
/// Lossless conversion for well-formed sequences (via the entities).
std::vector<std::string> convert_tags(const std::vector<std::string>& tags, TagScheme from,
                                      TagScheme to);

}  // namespace cellstate
