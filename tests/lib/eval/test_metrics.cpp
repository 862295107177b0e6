// Metrics against cases worked out by hand (lib/src/metrics.cpp).
#include <gtest/gtest.h>

#include <cmath>

#include "cellstate/eval/metrics.h"

namespace cs = cellstate;
using V = std::vector<std::string>;

TEST(ClassificationReport, HandComputed) {
  const auto r = cs::classification_report({0, 0, 1, 1, 2}, {0, 1, 1, 1, 0}, {"a", "b", "c"});
  EXPECT_DOUBLE_EQ(r.accuracy, 0.6);
  EXPECT_EQ(r.confusion, (std::vector<std::vector<int64_t>>{{1, 1, 0}, {0, 2, 0}, {1, 0, 0}}));
  EXPECT_DOUBLE_EQ(r.per_class[0].precision, 0.5);
  EXPECT_DOUBLE_EQ(r.per_class[0].recall, 0.5);
  EXPECT_DOUBLE_EQ(r.per_class[1].precision, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(r.per_class[1].recall, 1.0);
  EXPECT_DOUBLE_EQ(r.per_class[1].f1, 0.8);
  EXPECT_DOUBLE_EQ(r.per_class[2].f1, 0.0);  // never predicted: 0, not NaN
  EXPECT_EQ(r.per_class[2].support, 1);
  EXPECT_NEAR(r.macro_f1, 1.3 / 3.0, 1e-12);
  EXPECT_NE(r.table().find("accuracy 60.00%"), std::string::npos);
  EXPECT_DOUBLE_EQ(r.to_json()["per_class"]["b"]["f1"].get<double>(), 0.8);
  EXPECT_THROW(cs::classification_report({0}, {0, 1}, {"a", "b"}), std::invalid_argument);
}

namespace {
cs::ChunkReport score(cs::TagScheme scheme, const std::vector<std::pair<V, V>>& sentences) {
  cs::ChunkScorer scorer(scheme);
  for (const auto& [gold, pred] : sentences) scorer.add(gold, pred);
  return scorer.report();
}
}  // namespace

TEST(Conlleval, PerfectAndPartial) {
  auto r = score(cs::TagScheme::kIOB2, {{{"B-PER", "I-PER", "O", "B-LOC"}, {"B-PER", "I-PER", "O", "B-LOC"}}});
  EXPECT_EQ(r.overall.correct, 2);
  EXPECT_DOUBLE_EQ(r.overall.f1(), 100.0);
  // Wrong boundary and wrong type both count as misses.
  r = score(cs::TagScheme::kIOB2, {{{"B-PER", "I-PER", "O", "B-LOC"}, {"B-PER", "O", "O", "B-ORG"}}});
  EXPECT_EQ(r.overall.correct, 0);
  EXPECT_EQ(r.overall.guessed, 2);
  EXPECT_EQ(r.overall.gold, 2);
  EXPECT_EQ(r.per_type.at("ORG").guessed, 1);
  EXPECT_EQ(r.per_type.at("ORG").gold, 0);
  EXPECT_DOUBLE_EQ(r.accuracy(), 50.0);
}

TEST(Conlleval, AdjacentSameTypeEntities) {
  // Gold: two one-token PERs. Predicted: one two-token PER. Nothing correct.
  auto r = score(cs::TagScheme::kIOB2, {{{"B-PER", "B-PER"}, {"B-PER", "I-PER"}}});
  EXPECT_EQ(r.overall.gold, 2);
  EXPECT_EQ(r.overall.guessed, 1);
  EXPECT_EQ(r.overall.correct, 0);
  EXPECT_DOUBLE_EQ(r.overall.precision(), 0.0);
  // IOB1: B- marks the second of two adjacent entities.
  r = score(cs::TagScheme::kIOB1, {{{"I-PER", "I-PER", "B-PER"}, {"I-PER", "I-PER", "I-PER"}}});
  EXPECT_EQ(r.overall.gold, 2);
  EXPECT_EQ(r.overall.guessed, 1);
  EXPECT_EQ(r.overall.correct, 0);
  r = score(cs::TagScheme::kIOB1, {{{"I-PER", "I-PER", "B-PER"}, {"I-PER", "I-PER", "B-PER"}}});
  EXPECT_EQ(r.overall.correct, 2);
}

TEST(Conlleval, EntitiesAtSentenceEndsDoNotJoin) {
  // The LOC ending sentence 1 and the LOC starting sentence 2 are two entities.
  auto r = score(cs::TagScheme::kIOB1, {{{"O", "I-LOC"}, {"O", "I-LOC"}}, {{"I-LOC"}, {"O"}}});
  EXPECT_EQ(r.overall.gold, 2);
  EXPECT_EQ(r.overall.guessed, 1);
  EXPECT_EQ(r.overall.correct, 1);
  EXPECT_DOUBLE_EQ(r.overall.precision(), 100.0);
  EXPECT_DOUBLE_EQ(r.overall.recall(), 50.0);
  EXPECT_NEAR(r.overall.f1(), 200.0 / 3.0, 1e-12);
  EXPECT_EQ(r.tokens, 3);
}

TEST(Conlleval, NoEntitiesAndAllO) {
  auto r = score(cs::TagScheme::kIOB2, {{{"O", "O", "O"}, {"O", "O", "O"}}});
  EXPECT_EQ(r.overall.gold, 0);
  EXPECT_DOUBLE_EQ(r.overall.f1(), 0.0);  // conlleval prints 0.00, not NaN
  EXPECT_DOUBLE_EQ(r.accuracy(), 100.0);
  r = score(cs::TagScheme::kIOB2, {{{"B-MISC", "O"}, {"O", "O"}}});
  EXPECT_EQ(r.overall.guessed, 0);
  EXPECT_DOUBLE_EQ(r.overall.precision(), 0.0);
  EXPECT_DOUBLE_EQ(r.overall.recall(), 0.0);
  EXPECT_NE(r.table().find("processed 2 tokens with 1 phrases; found: 0 phrases; correct: 0."), std::string::npos)
      << r.table();
}

TEST(Conlleval, IobesScoredAsChunks) {
  // Two adjacent single-token PERs (S- S-) against one two-token PER (B- E-):
  // conlleval itself would merge the S- S- into one chunk and call it correct.
  auto r = score(cs::TagScheme::kIOBES, {{{"S-PER", "S-PER", "O"}, {"B-PER", "E-PER", "O"}}});
  EXPECT_EQ(r.overall.gold, 2);
  EXPECT_EQ(r.overall.guessed, 1);
  EXPECT_EQ(r.overall.correct, 0);
  EXPECT_NEAR(r.accuracy(), 100.0 / 3.0, 1e-12);  // S-PER != B-PER as tags
  r = score(cs::TagScheme::kIOBES, {{{"S-PER", "B-LOC", "I-LOC", "E-LOC"}, {"S-PER", "B-LOC", "I-LOC", "E-LOC"}}});
  EXPECT_EQ(r.overall.correct, 2);
  EXPECT_DOUBLE_EQ(r.overall.f1(), 100.0);
}

TEST(Bleu, Tokenize13a) {
  EXPECT_EQ(cs::tokenize_13a("Hello, world! It's 3.5-4 km."), "Hello , world ! It's 3.5 - 4 km .");
  EXPECT_EQ(cs::tokenize_13a("&quot;Quoted&quot; &amp; more"), "\" Quoted \" & more");
  EXPECT_EQ(cs::tokenize_13a("1,000.5 and (a/b)"), "1,000.5 and ( a / b )");
  EXPECT_EQ(cs::tokenize_13a("  spaced   out  "), "spaced out");
}

TEST(Bleu, HandComputedCorpus) {
  // 1-grams 5/7, 2-grams 3/6, 3-grams 1/5, 4-grams 0/4 -> exp smoothing 100/(2*4).
  auto s = cs::corpus_bleu({"the cat the cat on the mat"}, {"the cat is on the mat"});
  EXPECT_EQ(s.correct, (std::vector<int64_t>{5, 3, 1, 0}));
  EXPECT_EQ(s.total, (std::vector<int64_t>{7, 6, 5, 4}));
  const double expected =
      std::exp((std::log(500.0 / 7) + std::log(50.0) + std::log(20.0) + std::log(12.5)) / 4);
  EXPECT_NEAR(s.score, expected, 1e-9);
  EXPECT_DOUBLE_EQ(s.brevity_penalty, 1.0);
  EXPECT_NE(s.to_string().find("BLEU = 30.74 71.4/50.0/20.0/12.5 (BP = 1.000 ratio = 1.167 hyp_len = 7 ref_len = 6)"),
            std::string::npos)
      << s.to_string();
  EXPECT_NEAR(cs::corpus_bleu({"the cat sat on the mat"}, {"the cat sat on the mat"}).score, 100.0, 1e-9);
}

TEST(Bleu, BrevityPenaltyEmptyAndLowercase) {
  auto s = cs::corpus_bleu({"a b c d e"}, {"a b c d e f g h i j"});
  EXPECT_NEAR(s.brevity_penalty, std::exp(-1.0), 1e-12);
  EXPECT_NEAR(s.score, 100 * std::exp(-1.0), 1e-9);
  s = cs::corpus_bleu({""}, {"a b c"});
  EXPECT_EQ(s.score, 0.0);
  EXPECT_EQ(s.brevity_penalty, 0.0);
  EXPECT_EQ(s.hyp_length, 0);
  // Corpus level: an empty line among others only adds reference length.
  s = cs::corpus_bleu({"a b c d e", ""}, {"a b c d e", "f g h i j"});
  EXPECT_NEAR(s.score, 100 * std::exp(1 - 10.0 / 5.0), 1e-9);
  // No 3-gram in the hypothesis: precision 0 for orders 3 and 4 -> 0.
  EXPECT_EQ(cs::corpus_bleu({"the cat"}, {"the cat sat on the mat"}).score, 0.0);
  cs::BleuOptions lower;
  lower.lowercase = true;
  EXPECT_LT(cs::corpus_bleu({"Ein Hund L\xC3\x84UFT schnell"}, {"ein hund l\xC3\xA4uft schnell"}).score, 100.0);
  EXPECT_NEAR(cs::corpus_bleu({"Ein Hund L\xC3\x84UFT schnell"}, {"ein hund l\xC3\xA4uft schnell"}, lower).score, 100.0, 1e-9);
  EXPECT_THROW(cs::corpus_bleu({"a"}, {"a", "b"}), std::invalid_argument);
}

TEST(Chrf, MatchesSacrebleu) {
  // Reference values printed by sacreBLEU 2.x's CHRF() with its defaults.
  EXPECT_NEAR(cs::corpus_chrf({"The relationship between Obama and Netanyahu is not exactly friendly."},
                              {"The ties between Obama and Netanyahu are not particularly friendly."}),
              61.576379378113785, 1e-9);
  EXPECT_NEAR(cs::corpus_chrf({"The relationship between cats and dogs is not exactly friendly.",
                               "a good bookshop is just a genteel black hole that knows how to read."},
                              {"The relationship between dogs and cats is not exactly friendly.",
                               "A good bookshop is just a genteel Black Hole that knows how to read."}),
              84.64214891738334, 1e-9);
  EXPECT_NEAR(cs::corpus_chrf({"same text"}, {"same text"}), 100.0, 1e-9);
  EXPECT_EQ(cs::corpus_chrf({""}, {"abc"}), 0.0);
}

TEST(LanguageModelMetrics, PerplexityAndBitsPerChar) {
  EXPECT_NEAR(cs::perplexity(10 * std::log(4.0), 10), 4.0, 1e-12);
  EXPECT_NEAR(cs::bits_per_char(8 * std::log(2.0), 4), 2.0, 1e-12);
  EXPECT_NEAR(cs::nats_per_char(3.0, 2), 1.5, 1e-12);
  EXPECT_EQ(cs::perplexity(1.0, 0), 0.0);
}
