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

namespace {

/// A decode of T steps over keys = memory · w, with input feeding (each
/// query depends on the previous context), padding masked, and keys also
/// read directly (as additive attention does); `source` true: through
/// AttentionSource, false: through torch::bmm. The loss, for backward.
torch::Tensor decode_loss(const torch::Tensor& memory, const torch::Tensor& w, const torch::Tensor& q0,
                          const torch::Tensor& mask, int64_t T, bool source) {
  const auto keys = torch::matmul(memory, w);
  const cs::AttentionSource s(keys, memory);
  auto q = q0;
  auto loss = torch::zeros({});
  for (int64_t t = 0; t < T; ++t) {
    const auto& k = source ? s.keys() : keys;
    auto scores = source ? s.scores(q) : torch::bmm(k, q.unsqueeze(2)).squeeze(2);
    scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
    const auto a = torch::softmax(scores, 1);
    const auto c = source ? s.context(a) : torch::bmm(a.unsqueeze(1), memory).squeeze(1);
    q = torch::tanh(c.narrow(1, 0, q.size(1)) + q * (t + 1));
    loss = loss + (c * c).sum() + (q * static_cast<double>(t)).sum();
  }
  return loss + (source ? s.keys() : keys).pow(2).sum() * 0.01;
}

}  // namespace

TEST(Attention, SourceGathersTheStepsGradientsAsBmmsBackwardDoes) {
  torch::manual_seed(11);
  const int64_t B = 4, S = 6, D = 5, T = 7;
  const auto memory = torch::randn({B, S, 2 * D}, torch::requires_grad());
  const auto w = torch::randn({2 * D, D}, torch::requires_grad());
  const auto q0 = torch::randn({B, D}, torch::requires_grad());
  const auto mask = torch::arange(S).unsqueeze(0) < torch::tensor({6, 3, 1, 5}).unsqueeze(1);
  const std::vector<torch::Tensor> inputs{memory, w, q0};
  const auto expected = torch::autograd::grad({decode_loss(memory, w, q0, mask, T, false)}, inputs);

  auto got = torch::autograd::grad({decode_loss(memory, w, q0, mask, T, true)}, inputs);
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_TRUE(torch::allclose(got[i], expected[i], 1e-4, 1e-5)) << i;

  // A pass that does not reach the gathering node (the query's gradient
  // only) leaves nothing for the next one.
  const auto loss = decode_loss(memory, w, q0, mask, T, true);
  const auto dq = torch::autograd::grad({loss}, {q0}, {}, /*retain_graph=*/true);
  EXPECT_TRUE(torch::allclose(dq[0], expected[2], 1e-4, 1e-5));
  got = torch::autograd::grad({loss}, inputs, {}, /*retain_graph=*/true);
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_TRUE(torch::allclose(got[i], expected[i], 1e-4, 1e-5)) << i;
  // Two passes through the same graph accumulate twice the gradient.
  loss.backward({}, /*retain_graph=*/true);
  loss.backward();
  EXPECT_TRUE(torch::allclose(memory.grad(), 2 * expected[0], 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(w.grad(), 2 * expected[1], 1e-4, 1e-5));

  // Without gradients it is the two functions.
  torch::NoGradGuard no_grad;
  const cs::AttentionSource plain(memory.narrow(2, 0, D), memory);
  EXPECT_TRUE(torch::equal(plain.scores(q0), cs::attention_scores(memory.narrow(2, 0, D), q0)));
  EXPECT_THROW(cs::AttentionSource(torch::zeros({2, 3, 4}), torch::zeros({2, 4, 4})), c10::Error);
  EXPECT_THROW(cs::AttentionSource().scores(q0), c10::Error);
}

TEST(Attention, SourceChecksTheStepsShapesUnderAutograd) {
  const auto keys = torch::randn({2, 3, 4}, torch::requires_grad());
  const cs::AttentionSource s(keys, keys);
  EXPECT_THROW(s.scores(torch::zeros({2, 5}, torch::requires_grad())), c10::Error);
  EXPECT_THROW(s.scores(torch::zeros({3, 4})), c10::Error);
  EXPECT_THROW(s.context(torch::zeros({2, 4})), c10::Error);
  EXPECT_THROW(s.context(torch::zeros({2, 3, 1})), c10::Error);
}
