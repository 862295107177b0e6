// Attention's batched products (nn/attention.h) against torch::bmm.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cellstate/nn/attention.h"

namespace cs = cellstate;

TEST(Attention, LoopsEqualBatchedProducts) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(5);
  for (auto [B, S, D] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 7, 17}, {160, 15, 256}, {5, 1, 512}}) {
    const auto keys = torch::randn({B, S, D});
    const auto query = torch::randn({B, D});
    const auto weights = torch::softmax(torch::randn({B, S}), 1);
    const auto memory = torch::randn({B, S, 2 * D});
    const auto scores = cs::attention_scores(keys, query);
    const auto context = cs::attention_context(weights, memory);
    EXPECT_TRUE(torch::allclose(scores, torch::bmm(keys, query.unsqueeze(2)).squeeze(2), 1e-5, 1e-4)) << B << S << D;
    EXPECT_TRUE(torch::allclose(context, torch::bmm(weights.unsqueeze(1), memory).squeeze(1), 1e-5, 1e-5)) << B << S;
    // Non-contiguous views (a beam's rows picked out) give the same.
    const auto every_other = torch::arange(0, B, 2);
    EXPECT_TRUE(torch::allclose(cs::attention_scores(keys.index_select(0, every_other).transpose(1, 2).contiguous()
                                                         .transpose(1, 2),
                                                     query.index_select(0, every_other)),
                                scores.index_select(0, every_other), 1e-6, 1e-6));
  }
}

TEST(Attention, RecordsGradientsThroughBmmAndChecksShapes) {
  const auto keys = torch::randn({2, 3, 4}, torch::requires_grad());
  const auto query = torch::randn({2, 4}, torch::requires_grad());
  cs::attention_scores(keys, query).sum().backward();
  EXPECT_TRUE(torch::allclose(query.grad(), keys.sum(1).detach()));
  const auto weights = torch::rand({2, 3}, torch::requires_grad());
  const auto memory = torch::randn({2, 3, 5});
  cs::attention_context(weights, memory).sum().backward();
  EXPECT_TRUE(torch::allclose(weights.grad(), memory.sum(2)));
  // float64 goes through bmm.
  const auto k64 = torch::randn({2, 3, 4}, torch::kDouble);
  const auto q64 = torch::randn({2, 4}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(cs::attention_scores(k64, q64), torch::bmm(k64, q64.unsqueeze(2)).squeeze(2)));
  EXPECT_THROW(cs::attention_scores(torch::zeros({2, 3, 4}), torch::zeros({2, 5})), c10::Error);
  EXPECT_THROW(cs::attention_scores(torch::zeros({2, 3, 4}), torch::zeros({3, 4})), c10::Error);
  EXPECT_THROW(cs::attention_context(torch::zeros({2, 4}), torch::zeros({2, 3, 4})), c10::Error);
  EXPECT_THROW(cs::attention_context(torch::zeros({2, 3}), torch::zeros({2, 3})), c10::Error);
}
