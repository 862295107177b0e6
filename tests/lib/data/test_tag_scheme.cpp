// Tag schemes and entity spans (data/tag_scheme.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "cellstate/data/batching.h"
#include "cellstate/util/io.h"
#include "cellstate/data/readers.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;

TEST(TagSchemes, SpansOfEachScheme) {
  using V = std::vector<std::string>;
  const std::vector<cs::Span> expected = {{0, 2, "PER"}, {2, 3, "PER"}, {4, 5, "LOC"}};
  EXPECT_EQ(cs::tags_to_spans(V{"I-PER", "I-PER", "B-PER", "O", "I-LOC"}, cs::TagScheme::kIOB1), expected);
  EXPECT_EQ(cs::tags_to_spans(V{"B-PER", "I-PER", "B-PER", "O", "B-LOC"}, cs::TagScheme::kIOB2), expected);
  EXPECT_EQ(cs::tags_to_spans(V{"B-PER", "E-PER", "S-PER", "O", "S-LOC"}, cs::TagScheme::kIOBES), expected);
  // Lenient like conlleval: an I- of another type starts a new entity.
  EXPECT_EQ(cs::tags_to_spans(V{"B-PER", "I-LOC"}, cs::TagScheme::kIOB2),
            (std::vector<cs::Span>{{0, 1, "PER"}, {1, 2, "LOC"}}));
  EXPECT_THROW(cs::tags_to_spans(V{"S-PER"}, cs::TagScheme::kIOB2), std::invalid_argument);
  EXPECT_THROW(cs::tags_to_spans(V{"X-PER"}, cs::TagScheme::kIOB2), std::invalid_argument);
}

TEST(TagSchemes, ConversionsAreLossless) {
  using V = std::vector<std::string>;
  const V iob1 = {"I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG", "O", "I-MISC"};
  const V iob2 = cs::convert_tags(iob1, cs::TagScheme::kIOB1, cs::TagScheme::kIOB2);
  const V iobes = cs::convert_tags(iob1, cs::TagScheme::kIOB1, cs::TagScheme::kIOBES);
  EXPECT_EQ(iob2, (V{"B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "B-ORG", "I-ORG", "O", "B-MISC"}));
  EXPECT_EQ(iobes, (V{"B-PER", "E-PER", "S-PER", "O", "S-LOC", "S-ORG", "B-ORG", "E-ORG", "O", "S-MISC"}));
  for (auto from : {cs::TagScheme::kIOB1, cs::TagScheme::kIOB2, cs::TagScheme::kIOBES}) {
    const V& source = from == cs::TagScheme::kIOB1 ? iob1 : from == cs::TagScheme::kIOB2 ? iob2 : iobes;
    for (auto to : {cs::TagScheme::kIOB1, cs::TagScheme::kIOB2, cs::TagScheme::kIOBES}) {
      const V there = cs::convert_tags(source, from, to);
      EXPECT_EQ(cs::convert_tags(there, to, from), source)
          << cs::to_string(from) << " -> " << cs::to_string(to) << " -> back";
    }
  }
  EXPECT_EQ(cs::parse_tag_scheme("BIO"), cs::TagScheme::kIOB2);
  EXPECT_THROW(cs::parse_tag_scheme("bilou"), std::invalid_argument);
}
