// The recurrent language model (models/language_model.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "cellstate/util/io.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/tasks/textgen.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::copy_parameters;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;
using cellstate::testing::max_abs_diff;

TEST(LanguageModel, TiedModelSharesTheEmbeddingAndNamesFollowPyTorch) {
  cs::LanguageModel tied(cs::LanguageModelOptions(50).embed(16).hidden(16).layers(2).tie(true));
  auto names = tied->named_parameters().keys();
  EXPECT_EQ(std::count(names.begin(), names.end(), "encoder.weight"), 1);
  EXPECT_EQ(std::count(names.begin(), names.end(), "decoder.bias"), 1);
  EXPECT_EQ(std::count(names.begin(), names.end(), "decoder.weight"), 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "rnn.weight_hh_l1"), 1);
  // A different size of embedding gets a projection before the tied decoder.
  cs::LanguageModel projected(cs::LanguageModelOptions(50).embed(8).hidden(16).tie(true));
  auto [logits, state] = projected->forward(torch::randint(50, {5, 3}, torch::kInt64));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{5, 3, 50}));
  EXPECT_EQ(state.h.sizes(), (std::vector<int64_t>{2, 3, 16}));
  cs::LanguageModel untied(cs::LanguageModelOptions(50).embed(8).hidden(16));
  EXPECT_TRUE(untied->named_parameters().contains("decoder.weight"));
  EXPECT_NE(exception_of([&] { untied->forward(torch::zeros({3}, torch::kInt64)); }), "");
}

TEST(LanguageModel, StepByStepEqualsOneForwardAndBuiltinEqualsCustom) {
  for (auto kind : {cs::RecurrentKind::kLSTM, cs::RecurrentKind::kGRU}) {
    torch::manual_seed(5);
    cs::LanguageModel custom(cs::LanguageModelOptions(40).embed(12).hidden(10).layers(2).kind(kind));
    cs::LanguageModel builtin(
        cs::LanguageModelOptions(40).embed(12).hidden(10).layers(2).kind(kind).impl(cs::Implementation::kBuiltin));
    copy_parameters(*custom, *builtin);
    custom->eval();
    builtin->eval();
    torch::NoGradGuard g;
    auto ids = torch::randint(40, {7, 2}, torch::kInt64);
    auto [logits, state] = custom->forward(ids);
    auto [logits_b, state_b] = builtin->forward(ids);
    EXPECT_LT(max_abs_diff(logits, logits_b), 1e-5);
    for (auto* m : {&custom, &builtin}) {
      cs::RecurrentState s;
      for (int64_t t = 0; t < 7; ++t) EXPECT_LT(max_abs_diff((*m)->step(ids[t], s), logits[t]), 1e-5) << t;
      EXPECT_LT(max_abs_diff(s.h, state.h), 1e-5);
    }
  }
}
