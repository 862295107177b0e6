// The BiLSTM-CRF sequence tagger (models/tagger.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "cellstate/util/io.h"
#include "cellstate/tasks/ner.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::copy_parameters;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;
using cellstate::testing::max_abs_diff;

TEST(Tagger, CasingClasses) {
  EXPECT_EQ(cs::word_casing("paris"), cs::Casing::kLower);
  EXPECT_EQ(cs::word_casing("EU"), cs::Casing::kUpper);
  EXPECT_EQ(cs::word_casing("Paris"), cs::Casing::kTitle);
  EXPECT_EQ(cs::word_casing("McDonald"), cs::Casing::kMixed);
  EXPECT_EQ(cs::word_casing("1996"), cs::Casing::kNumber);
  EXPECT_EQ(cs::word_casing("1,200.50"), cs::Casing::kNumber);
  EXPECT_EQ(cs::word_casing("F16"), cs::Casing::kHasDigit);
  EXPECT_EQ(cs::word_casing("."), cs::Casing::kOther);
}

TEST(Tagger, SentenceAloneEqualsPaddedBatchAndBuiltinEqualsCustom) {
  torch::manual_seed(2);
  auto options = cs::SequenceTaggerOptions(30, 5).word_embed(6).hidden(5).char_vocab(12).char_embed(4).char_hidden(3)
                     .piece_vocab(20).piece_embed(4).casing_embed(3).dropout(0.3);
  cs::SequenceTagger custom(options);
  cs::SequenceTagger builtin(options.impl(cs::Implementation::kBuiltin));
  copy_parameters(*custom, *builtin);
  custom->eval();
  builtin->eval();
  cs::TaggerInput a{{3, 4, 5}, {1, 2, 3}, {{2, 3}, {4}, {5, 6, 7}}, {{1}, {2, 3}, {4}}};
  cs::TaggerInput b{{6, 7, 8, 9, 10}, {1, 1, 1, 1, 1}, {{2}, {3}, {4, 5}, {6}, {7, 8, 9, 10}},
                    {{5}, {6}, {7}, {8, 9}, {10}}};
  torch::NoGradGuard g;
  const auto alone = custom->emissions(cs::make_tagger_batch({&a}));
  const auto batch = cs::make_tagger_batch({&b, &a});
  const auto both = custom->emissions(batch);
  EXPECT_LT(max_abs_diff(alone[0], both[1].slice(0, 0, 3)), 1e-5);
  EXPECT_EQ(both[1].slice(0, 3, 5).abs().sum().item<double>(), 0.0);  // padding
  EXPECT_LT(max_abs_diff(both, builtin->emissions(batch)), 1e-5);
  EXPECT_EQ(custom->decode(cs::make_tagger_batch({&a}), alone)[0], custom->decode(batch, both)[1]);
}

TEST(Tagger, RepeatedWordsShareOneCharacterRow) {
  // make_tagger_batch runs each distinct character sequence through the
  // character recurrence once and points every word at its row.
  cs::TaggerInput c{{3, 4, 3, 5}, {1, 1, 1, 2}, {{2, 3}, {4}, {2, 3}, {4, 6}}, {{1}, {2}, {1}, {3}}};
  cs::TaggerInput a{{3, 7}, {1, 1}, {{4, 6}, {2, 3}}, {{1}, {4}}};
  const auto batch = cs::make_tagger_batch({&c, &a});
  ASSERT_EQ(batch.chars.sizes(), (std::vector<int64_t>{3, 2}));
  EXPECT_TRUE(torch::equal(batch.chars, torch::tensor({2, 3, 4, 0, 4, 6}, torch::kInt64).reshape({3, 2})));
  EXPECT_TRUE(torch::equal(batch.char_lengths, torch::tensor({2, 1, 2}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.char_index, torch::tensor({0, 1, 0, 2, 2, 0}, torch::kInt64)));

  // The features are those of each word's own characters: a sentence's
  // emissions are the same alone (fewer rows) as beside another sentence,
  // and the built-in recurrences agree.
  torch::manual_seed(3);
  auto options = cs::SequenceTaggerOptions(30, 5).word_embed(6).hidden(5).char_vocab(12).char_embed(4).char_hidden(3)
                     .piece_vocab(20).piece_embed(4).casing_embed(3);
  cs::SequenceTagger custom(options);
  cs::SequenceTagger builtin(options.impl(cs::Implementation::kBuiltin));
  copy_parameters(*custom, *builtin);
  custom->eval();
  builtin->eval();
  torch::NoGradGuard g;
  const auto both = custom->emissions(batch);
  EXPECT_LT(max_abs_diff(custom->emissions(cs::make_tagger_batch({&c}))[0], both[0]), 1e-5);
  EXPECT_LT(max_abs_diff(custom->emissions(cs::make_tagger_batch({&a}))[0], both[1].slice(0, 0, 2)), 1e-5);
  EXPECT_LT(max_abs_diff(both, builtin->emissions(batch)), 1e-5);
}
