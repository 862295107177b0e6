// A row's k best log-probabilities without the whole log-softmax
// (decode/decoding.h top_log_probs), against LibTorch's log_softmax and topk.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "cellstate/decode/decoding.h"

namespace cs = cellstate;

namespace {

/// LibTorch's answer: log_softmax, the banned token at -inf, topk.
std::pair<torch::Tensor, torch::Tensor> reference(const torch::Tensor& logits, int64_t k, int64_t banned) {
  auto logp = torch::log_softmax(logits.to(torch::kDouble), 1);
  if (banned >= 0) logp.select(1, banned).fill_(-std::numeric_limits<double>::infinity());
  auto [values, tokens] = logp.topk(k, 1);
  return {values, tokens};
}

}  // namespace

TEST(TopLogProbs, EqualsLogSoftmaxThenTopK) {
  torch::manual_seed(3);
  for (int64_t vocabulary : {1, 7, 64, 65, 1000, 8003}) {
    for (int64_t k : {1, 2, 10}) {
      if (k > vocabulary) continue;
      for (int64_t banned : {int64_t{-1}, int64_t{0}, vocabulary - 1}) {
        const auto logits = torch::randn({13, vocabulary}) * 4;
        const auto got = cs::top_log_probs(logits, k, banned);
        const auto [values, tokens] = reference(logits, k, banned);
        ASSERT_EQ(got.values.sizes(), values.sizes());
        EXPECT_EQ(got.values.scalar_type(), torch::kDouble);
        // Random logits have no ties: the same tokens, in the same order.
        const auto finite = torch::isfinite(values);
        EXPECT_TRUE(torch::equal(got.tokens.masked_select(finite), tokens.masked_select(finite)))
            << "V=" << vocabulary << " k=" << k << " banned=" << banned;
        EXPECT_TRUE(torch::allclose(got.values.masked_select(finite), values.masked_select(finite), 1e-5, 1e-5))
            << "V=" << vocabulary << " k=" << k << " banned=" << banned;
        // Where the banned token must fill the row, it comes last, at -inf.
        EXPECT_TRUE(torch::equal(torch::isfinite(got.values), finite));
        if (banned >= 0) {
          EXPECT_TRUE(torch::equal(got.tokens.masked_select(~finite),
                                   torch::full({(~finite).sum().item<int64_t>()}, banned, torch::kInt64)));
        }
      }
    }
  }
}

TEST(TopLogProbs, TiesGoToTheLowerTokenAndExtremesFallBack) {
  // Ties: 2 at tokens 1, 3 and 4; k = 2 keeps 1 and 3, in that order.
  auto logits = torch::tensor({{0.0f, 2.0f, 1.0f, 2.0f, 2.0f}});
  auto got = cs::top_log_probs(logits, 2);
  EXPECT_EQ(got.tokens[0][0].item<int64_t>(), 1);
  EXPECT_EQ(got.tokens[0][1].item<int64_t>(), 3);
  const double log_z = std::log(std::exp(0.0) + 3 * std::exp(2.0) + std::exp(1.0));
  EXPECT_NEAR(got.values[0][0].item<double>(), 2.0 - log_z, 1e-6);
  // A -inf logit (a masked token) is a token of probability 0; a row with
  // +inf or NaN goes through LibTorch (NaN, as LibTorch gives); the finite
  // row beside them is unaffected.
  constexpr float kInf = std::numeric_limits<float>::infinity();
  logits = torch::tensor({{-kInf, 1.0f, 0.5f, 3.0f},
                          {0.25f, 1.0f, 0.5f, 3.0f},
                          {0.25f, kInf, 0.5f, 3.0f},
                          {0.25f, std::nanf(""), 0.5f, 3.0f}});
  got = cs::top_log_probs(logits, 3);
  const auto [values, tokens] = reference(logits, 3, -1);
  for (int64_t r : {0, 1}) {
    EXPECT_TRUE(torch::equal(got.tokens[r], tokens[r])) << r;
    EXPECT_TRUE(torch::allclose(got.values[r], values[r], 1e-6, 1e-6)) << r;
  }
  EXPECT_TRUE(torch::equal(got.values[2].isnan(), std::get<0>(torch::log_softmax(logits[2], 0).topk(3)).isnan()));
  EXPECT_TRUE(got.values[3].isnan().any().item<bool>());
  // A huge finite logit: the rest are ranked by their logits, which float32's
  // log_softmax would round to one value (-1e30).
  got = cs::top_log_probs(torch::tensor({{1e30f, 1.0f, 0.5f, 3.0f}}), 2);
  EXPECT_EQ(got.tokens[0][0].item<int64_t>(), 0);
  EXPECT_EQ(got.tokens[0][1].item<int64_t>(), 3);
  EXPECT_EQ(got.values[0][0].item<double>(), 0.0);
  EXPECT_NEAR(got.values[0][1].item<double>(), -1e30, 1e24);
}

TEST(TopLogProbs, RefusesWhatItCannotAnswer) {
  EXPECT_THROW(cs::top_log_probs(torch::zeros({2, 5}), 6), c10::Error);
  EXPECT_THROW(cs::top_log_probs(torch::zeros({2, 5}), 0), c10::Error);
  EXPECT_THROW(cs::top_log_probs(torch::zeros({2, 5}), 2, 5), c10::Error);
  EXPECT_THROW(cs::top_log_probs(torch::zeros({2, 5}, torch::kDouble), 2), c10::Error);
  EXPECT_THROW(cs::top_log_probs(torch::zeros({5}), 2), c10::Error);
}
