// Word and sentence splitting of raw text (data/word_split.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "cellstate/data/word_split.h"
#include "cellstate/util/text.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::copy_parameters;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;
using cellstate::testing::max_abs_diff;

namespace {

std::vector<std::vector<std::string>> words_of(const std::string& text) {
  std::vector<std::vector<std::string>> out;
  for (const auto& s : cs::split_words(text)) {
    out.emplace_back();
    for (const auto& t : s) out.back().push_back(t.text);
  }
  return out;
}

}  // namespace

TEST(WordSplit, SplitsLikeConllWithOffsets) {
  EXPECT_EQ(words_of("EU rejects German call to boycott British lamb."),
            (std::vector<std::vector<std::string>>{
                {"EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."}}));
  EXPECT_EQ(words_of("Germany's Mr. Smith (Reuters) said: \"U.S. firms don't pay $1,200.50 in 1996-97.\" He left."),
            (std::vector<std::vector<std::string>>{
                {"Germany", "'s", "Mr.", "Smith", "(", "Reuters", ")", "said", ":", "\"", "U.S.", "firms", "do",
                 "n't", "pay", "$1,200.50", "in", "1996-97", ".", "\""},
                {"He", "left", "."}}));
  // Line breaks end sentences; "a.m." and initials keep their dots; no split before lower case.
  EXPECT_EQ(words_of("J. Smith arrived at 9 a.m. and left\nthen came back... Later, O'Neill won."),
            (std::vector<std::vector<std::string>>{{"J.", "Smith", "arrived", "at", "9", "a.m.", "and", "left"},
                                                   {"then", "came", "back", "..."},
                                                   {"Later", ",", "O'Neill", "won", "."}}));
  // Offsets in bytes and in characters point at each token, multi-byte UTF-8 included.
  const std::string text = "Zürich – «José» met Ann.";
  for (const auto& s : cs::split_words(text))
    for (const auto& t : s) {
      EXPECT_EQ(text.substr(t.begin, t.end - t.begin), t.text);
      EXPECT_EQ(cs::utf8_length(std::string_view(text).substr(0, t.begin)), t.char_begin);
      EXPECT_EQ(t.char_end - t.char_begin, cs::utf8_length(t.text));
    }
  const auto zs = cs::split_words(text);
  ASSERT_EQ(zs.size(), 1u);
  EXPECT_EQ(zs[0][2].text, "\xC2\xAB");  // «
  EXPECT_EQ(zs[0][3].text, "José");
  EXPECT_EQ(zs[0][3].char_begin, 10);
  EXPECT_TRUE(cs::split_words("").empty());
  EXPECT_TRUE(cs::split_words("  \n \t ").empty());
}

TEST(WordSplit, SentencesOfText) {
  // Sentiment's per-file predictions read documents through this splitter.
  EXPECT_EQ(cs::split_sentences("Hi there. \"Go!\" he said... Done?"),
            (std::vector<std::string>{"Hi there.", "\"Go!\"", "he said...", "Done?"}));
}
