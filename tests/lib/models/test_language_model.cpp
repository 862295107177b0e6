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

TEST(LanguageModel, MemoisedInputProjectionsFollowTheWeights) {
  for (auto kind : {cs::RecurrentKind::kLSTM, cs::RecurrentKind::kGRU, cs::RecurrentKind::kRNN}) {
    SCOPED_TRACE(static_cast<int>(kind));
    torch::manual_seed(7);
    cs::LanguageModel model(cs::LanguageModelOptions(30).embed(12).hidden(10).layers(2).kind(kind));
    model->eval();
    torch::NoGradGuard no_grad;
    // Three streams; a token repeated within a step and tokens seen before.
    auto ids = torch::randint(30, {6, 3}, torch::kInt64);
    ids[2][1] = ids[2][0].item<int64_t>();
    ids[4][2] = ids[1][2].item<int64_t>();
    auto stepwise_matches_forward = [&](cs::LanguageModel& m) {
      auto [logits, state] = m->forward(ids);
      cs::RecurrentState s;
      for (int64_t t = 0; t < ids.size(0); ++t) EXPECT_LT(max_abs_diff(m->step(ids[t], s), logits[t]), 1e-5) << t;
      EXPECT_LT(max_abs_diff(s.h, state.h), 1e-5);
    };
    stepwise_matches_forward(model);
    // In-place updates of E, W_ih_l0 and b_ih_l0 (as an optimiser or a
    // loaded state dict makes them) invalidate every memoised row.
    model->encoder->weight.mul_(1.5);
    stepwise_matches_forward(model);
    auto rnn_params = model->rnn->named_parameters(/*recurse=*/false);
    rnn_params["weight_ih_l0"].add_(0.05);
    stepwise_matches_forward(model);
    rnn_params["bias_ih_l0"].sub_(0.1);
    stepwise_matches_forward(model);
    // A clone has tensors of its own and memoises its own rows.
    auto clone = cs::LanguageModel(std::dynamic_pointer_cast<cs::LanguageModelImpl>(model->clone()));
    clone->eval();
    clone->encoder->weight.mul_(0.5);
    stepwise_matches_forward(clone);
    stepwise_matches_forward(model);
    // For one stream the memoised step computes the product the plain step
    // computes: bit for bit the same state.
    auto* custom = dynamic_cast<cs::CustomRecurrentImpl*>(model->rnn.get());
    ASSERT_NE(custom, nullptr);
    // The first stream stepped both ways: (memoised, plain) final states.
    auto step_first_stream = [&] {
      cs::RecurrentState memoised, plain;
      for (int64_t t = 0; t < ids.size(0); ++t) {
        const auto one = ids[t].slice(0, 0, 1);
        model->step(one, memoised);
        if (!plain.h.defined()) {
          plain.h = torch::zeros_like(memoised.h);
          if (memoised.c.defined()) plain.c = torch::zeros_like(memoised.c);
        }
        custom->step_(model->encoder(one), plain);
      }
      return std::make_pair(memoised.h, plain.h);
    };
    model->encoder->weight.mul_(1.0);  // a new version: every row is computed again, one at a time
    const auto [memoised, plain] = step_first_stream();
    EXPECT_TRUE(torch::equal(memoised, plain));
    // Rows computed in float32 are not reused under bf16 products (nor the
    // other way round): the memoised step stays the plain step, bit for bit.
    if (cs::cpu_supports_bf16()) {
      torch::Tensor memoised16, plain16;
      {
        cs::MatmulPrecisionGuard bf16(cs::MatmulPrecision::kBFloat16);
        std::tie(memoised16, plain16) = step_first_stream();
      }
      EXPECT_TRUE(torch::equal(memoised16, plain16));
      EXPECT_FALSE(torch::equal(memoised16, plain)) << "bf16 products were not used";
      EXPECT_TRUE(torch::equal(step_first_stream().first, plain));
    }
    // Input gates of the wrong width are refused.
    cs::RecurrentState state{torch::zeros({2, 1, 10}), kind == cs::RecurrentKind::kLSTM ? torch::zeros({2, 1, 10})
                                                                                         : torch::Tensor()};
    EXPECT_NE(exception_of([&] { custom->step_projected_(torch::zeros({1, 5}), state); }).find("input gates"),
              std::string::npos);
  }
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
