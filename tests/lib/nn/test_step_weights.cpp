// Weights passed through StepWeights (nn/step_weights.h): the gradients
// their products leave there equal autograd's own sums.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cellstate/nn/cells.h"
#include "cellstate/nn/gemm.h"
#include "cellstate/nn/step_weights.h"

namespace cs = cellstate;

namespace {

/// T steps of an LSTM cell fed its own attention-like output (as a
/// decoder with input feeding), through a linear layer with a bias; the
/// cell's weight_hh and the layer's weight also read once outside the
/// loop. `passed`: the weights through StepWeights.
torch::Tensor loop_loss(cs::LSTMCell& cell, const torch::Tensor& w, const torch::Tensor& b, const torch::Tensor& xs,
                        bool passed) {
  const int64_t B = xs.size(1), H = cell->options.hidden_size();
  const cs::StepWeights cell_w = passed ? cell->step_weights() : cs::StepWeights();
  const cs::StepWeights layer_w = passed ? cs::StepWeights({w, b}) : cs::StepWeights();
  std::tuple<torch::Tensor, torch::Tensor> state{torch::zeros({B, H}), torch::zeros({B, H})};
  auto feed = torch::zeros({B, H});
  auto loss = torch::zeros({});
  for (int64_t t = 0; t < xs.size(0); ++t) {
    const auto x = torch::cat({xs[t], feed}, 1);
    state = passed ? cell->forward_with(x, state, cell_w) : cell(x, state);
    feed = torch::tanh(cs::linear(std::get<0>(state), passed ? layer_w[0] : w, passed ? layer_w[1] : b));
    loss = loss + (feed * feed).sum() * (t + 1) + std::get<1>(state).sum();
  }
  const auto& w_hh = passed ? cell_w[1] : cell->weight_hh;
  return loss + w_hh.pow(2).sum() + (passed ? layer_w[0] : w).sum();
}

}  // namespace

TEST(StepWeights, GradientsEqualAutogradsSumsAtEitherPrecision) {
  for (auto precision : {cs::MatmulPrecision::kFloat32, cs::MatmulPrecision::kBFloat16}) {
    if (precision == cs::MatmulPrecision::kBFloat16 && !cs::cpu_supports_bf16()) continue;
    cs::MatmulPrecisionGuard guard(precision);
    torch::manual_seed(3);
    const int64_t T = 6, B = 5, I = 7, H = 9;
    cs::LSTMCell cell(I + H, H);
    const auto w = torch::randn({H, H}, torch::requires_grad());
    const auto b = torch::randn({H}, torch::requires_grad());
    const auto xs = torch::randn({T, B, I}, torch::requires_grad());
    std::vector<torch::Tensor> inputs{xs, w, b};
    for (const auto& p : cell->parameters()) inputs.push_back(p);
    const auto expected = torch::autograd::grad({loop_loss(cell, w, b, xs, false)}, inputs);
    const auto got = torch::autograd::grad({loop_loss(cell, w, b, xs, true)}, inputs);
    // The same sums in another order: float32 rounding, or bfloat16's
    // rounding of the products' operands.
    const double tol = precision == cs::MatmulPrecision::kFloat32 ? 1e-4 : 3e-2;
    for (size_t i = 0; i < inputs.size(); ++i)
      EXPECT_TRUE(torch::allclose(got[i], expected[i], tol, tol)) << cs::to_string(precision) << " input " << i;
  }
}

TEST(StepWeights, EachPassConsumesWhatItsStepsLeft) {
  torch::manual_seed(4);
  const int64_t T = 4, B = 3, I = 2, H = 5;
  cs::LSTMCell cell(I + H, H);
  const auto w = torch::randn({H, H}, torch::requires_grad());
  const auto b = torch::randn({H}, torch::requires_grad());
  const auto xs = torch::randn({T, B, I}, torch::requires_grad());
  const std::vector<torch::Tensor> inputs{w, b, cell->weight_ih, cell->bias_hh};
  const auto expected = torch::autograd::grad({loop_loss(cell, w, b, xs, false)}, inputs);
  const auto loss = loop_loss(cell, w, b, xs, true);
  // A pass for the inputs' gradient only does not reach the node and leaves nothing there.
  torch::autograd::grad({loss}, {xs}, {}, /*retain_graph=*/true);
  auto got = torch::autograd::grad({loss}, inputs, {}, /*retain_graph=*/true);
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_TRUE(torch::allclose(got[i], expected[i], 1e-4, 1e-4)) << i;
  // Two passes accumulate twice the gradient in the leaves.
  loss.backward({}, /*retain_graph=*/true);
  loss.backward();
  EXPECT_TRUE(torch::allclose(w.grad(), 2 * expected[0], 1e-4, 1e-4));
  EXPECT_TRUE(torch::allclose(cell->weight_ih.grad(), 2 * expected[2], 1e-4, 1e-4));
}

TEST(StepWeights, PassesWeightsOnAsTheyAreWithoutGradientsAndChecksACellsWeights) {
  cs::LSTMCell cell(4, 3);
  {
    torch::NoGradGuard no_grad;
    const auto passed = cell->step_weights();
    ASSERT_EQ(passed.size(), 4u);
    EXPECT_TRUE(passed[0].is_same(cell->weight_ih));
    // Not recorded: nothing to leave.
    EXPECT_TRUE(cs::detail::gradient_terms_of(passed[0]).isNone());
  }
  // A weight passed through the node has its place there; others none.
  const auto passed = cell->step_weights();
  EXPECT_FALSE(cs::detail::gradient_terms_of(passed[1]).isNone());
  EXPECT_TRUE(cs::detail::gradient_terms_of(cell->weight_hh).isNone());
  // A frozen weight is not passed.
  const auto frozen = torch::randn({3, 4});
  const cs::StepWeights some({frozen, cell->weight_ih});
  EXPECT_TRUE(some[0].is_same(frozen));
  EXPECT_FALSE(cs::detail::gradient_terms_of(some[1]).isNone());
  EXPECT_FALSE(cs::detail::leave_gradient_term(c10::IValue(), torch::zeros({2, 12}), torch::zeros({2, 4})));
  // Weights of another cell's shapes are refused.
  cs::LSTMCell other(5, 3);
  EXPECT_THROW(cell->forward_with(torch::zeros({2, 4}), {}, other->step_weights()), c10::Error);
  EXPECT_THROW(cell->forward_with(torch::zeros({2, 4}), {}, cs::StepWeights({cell->weight_ih})), c10::Error);
}

TEST(StepWeights, ProductsLeaveTheirTermsInsteadOfAGradient) {
  torch::manual_seed(6);
  cs::LSTMCell cell(4, 3);
  const auto w = torch::randn({2, 3}, torch::requires_grad());
  const auto passed = cell->step_weights();
  const cs::StepWeights layer({w});
  const auto [h, c] = cell->forward_with(torch::randn({5, 4}), {}, passed);
  const auto loss = cs::linear(h, layer[0]).sum() + c.sum();
  // What autograd hands the passed weights themselves: nothing from the
  // products, which left their terms with the node instead.
  const auto g = torch::autograd::grad({loss}, {passed[0], passed[3], layer[0]}, {}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
  for (const auto& t : g) EXPECT_FALSE(t.defined());
}
