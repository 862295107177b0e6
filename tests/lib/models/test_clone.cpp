// clone() of the four models (LibTorch's Cloneable): the copy predicts what
// the original does and keeps doing so after the original changes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cellstate/models/classifier.h"
#include "cellstate/models/language_model.h"
#include "cellstate/models/seq2seq.h"
#include "cellstate/models/tagger.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::max_abs_diff;

namespace {

template <typename Holder, typename Run>
void expect_independent_clone(Holder& original, Run run) {
  original->eval();
  auto copy = std::dynamic_pointer_cast<typename Holder::Impl>(original->clone());
  ASSERT_NE(copy, nullptr);
  copy->eval();
  const auto before = run(*original);
  EXPECT_EQ(max_abs_diff(run(*copy), before), 0.0);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : original->parameters()) p.mul_(0.5);
  }
  EXPECT_GT(max_abs_diff(run(*original), before), 0.0);
  EXPECT_EQ(max_abs_diff(run(*copy), before), 0.0);
}

}  // namespace

TEST(Clone, EveryModelIsADeepCopy) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  const auto ids = torch::tensor({{5, 6, 7, 8}, {9, 10, 0, 0}}, torch::kInt64);
  const auto lengths = torch::tensor({4, 2}, torch::kInt64);
  for (auto impl : {cs::Implementation::kCustom, cs::Implementation::kBuiltin}) {
    cs::TextClassifier classifier(cs::TextClassifierOptions(20, 3).embed(8).hidden(6).impl(impl));
    expect_independent_clone(classifier, [&](cs::TextClassifierImpl& m) { return m.forward(ids, lengths); });

    cs::LanguageModel lm(cs::LanguageModelOptions(20).embed(8).hidden(8).tie(true).impl(impl));
    expect_independent_clone(lm, [&](cs::LanguageModelImpl& m) { return m.forward(ids.t(), {}).first; });

    cs::Seq2Seq s2s(cs::Seq2SeqOptions(20, 20).embed(8).hidden(6).layers(2).share_embeddings(true).tie(true).impl(impl));
    expect_independent_clone(s2s, [&](cs::Seq2SeqImpl& m) { return m.forward(ids, lengths, ids.slice(1, 0, 3)); });

    cs::SequenceTagger tagger(cs::SequenceTaggerOptions(20, 5).word_embed(8).hidden(6).char_vocab(10).impl(impl));
    cs::TaggerInput a{{5, 6, 7}, {1, 2, 1}, {{2, 3}, {4}, {5, 6, 7}}, {}};
    cs::TaggerInput b{{8, 9}, {1, 1}, {{8}, {9, 2}}, {}};
    const auto batch = cs::make_tagger_batch({&a, &b});
    expect_independent_clone(tagger, [&](cs::SequenceTaggerImpl& m) { return m.emissions(batch); });
  }
}
