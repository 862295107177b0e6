// Cells and single steps against the equations, LibTorch's cells, and a
// finite-difference gradient check.
#include <cmath>

#include "cellstate/nn/cells.h"
#include "cellstate/nn/rnn.h"
#include "test_util.h"

namespace cellstate {
namespace {

using testing::max_abs_diff;
using torch::Tensor;

double sig(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// Fixed small weights for I = 2, H = 2 (gate rows i0 i1 f0 f1 g0 g1 o0 o1).
const double kWih[8][2] = {{0.1, -0.2}, {0.3, 0.4},  {-0.5, 0.6}, {0.7, -0.8},
                           {0.2, 0.1},  {-0.3, 0.5}, {0.4, 0.4},  {-0.6, 0.2}};
const double kWhh[8][2] = {{0.05, 0.1}, {-0.1, 0.2}, {0.3, -0.3}, {0.2, 0.1},
                           {-0.4, 0.3}, {0.1, 0.1},  {0.2, -0.2}, {0.3, 0.05}};
const double kBih[8] = {0.01, -0.02, 0.5, 0.4, 0.0, 0.1, -0.1, 0.2};
const double kBhh[8] = {0.02, 0.03, 0.1, -0.1, 0.05, 0.0, 0.1, -0.05};
const double kX[2] = {0.5, -1.5};
const double kH[2] = {0.25, -0.75};
const double kC[2] = {1.0, -0.5};

/// The expected (h', c') worked out directly from the LSTM equations.
void lstm_by_hand(double h_out[2], double c_out[2]) {
  double pre[8];
  for (int r = 0; r < 8; ++r) {
    pre[r] = kBih[r] + kBhh[r];
    for (int k = 0; k < 2; ++k) pre[r] += kWih[r][k] * kX[k] + kWhh[r][k] * kH[k];
  }
  for (int j = 0; j < 2; ++j) {
    const double i = sig(pre[j]), f = sig(pre[2 + j]), g = std::tanh(pre[4 + j]),
                 o = sig(pre[6 + j]);
    c_out[j] = f * kC[j] + i * g;
    h_out[j] = o * std::tanh(c_out[j]);
  }
}

Tensor tensor2d(const double (*v)[2], int64_t rows) {
  auto t = torch::empty({rows, 2}, torch::kDouble);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < 2; ++k) t[r][k] = v[r][k];
  return t;
}

Tensor tensor1d(const double* v, int64_t n) {
  return torch::from_blob(const_cast<double*>(v), {n}, torch::kDouble).clone();
}

TEST(LSTMStep, CellMatchesEquationsByHand) {
  double h_ref[2], c_ref[2];
  lstm_by_hand(h_ref, c_ref);
  LSTMCell cell(2, 2);
  cell->to(torch::kDouble);
  {
    torch::NoGradGuard g;
    cell->weight_ih.copy_(tensor2d(kWih, 8));
    cell->weight_hh.copy_(tensor2d(kWhh, 8));
    cell->bias_ih.copy_(tensor1d(kBih, 8));
    cell->bias_hh.copy_(tensor1d(kBhh, 8));
  }
  auto x = tensor1d(kX, 2).unsqueeze(0);
  auto h = tensor1d(kH, 2).unsqueeze(0);
  auto c = tensor1d(kC, 2).unsqueeze(0);
  auto [h1, c1] = cell->forward(x, {h, c});
  for (int j = 0; j < 2; ++j) {
    EXPECT_NEAR(h1[0][j].item<double>(), h_ref[j], 1e-12);
    EXPECT_NEAR(c1[0][j].item<double>(), c_ref[j], 1e-12);
  }
}

TEST(LSTMStep, FusedLayerMatchesEquationsByHand) {
  double h_ref[2], c_ref[2];
  lstm_by_hand(h_ref, c_ref);
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    LSTM lstm(RecurrentOptions(2, 2));
    lstm->to(dtype);
    {
      torch::NoGradGuard g;
      lstm->named_parameters()["weight_ih_l0"].copy_(tensor2d(kWih, 8));
      lstm->named_parameters()["weight_hh_l0"].copy_(tensor2d(kWhh, 8));
      lstm->named_parameters()["bias_ih_l0"].copy_(tensor1d(kBih, 8));
      lstm->named_parameters()["bias_hh_l0"].copy_(tensor1d(kBhh, 8));
    }
    auto x = tensor1d(kX, 2).view({1, 1, 2}).to(dtype);
    auto h = tensor1d(kH, 2).view({1, 1, 2}).to(dtype);
    auto c = tensor1d(kC, 2).view({1, 1, 2}).to(dtype);
    const double tol = dtype == torch::kDouble ? 1e-12 : 1e-6;
    for (bool grad : {false, true}) {
      torch::AutoGradMode mode(grad);
      auto [y, state] = lstm->forward(x, {h, c});
      for (int j = 0; j < 2; ++j) {
        EXPECT_NEAR(y[0][0][j].item<double>(), h_ref[j], tol);
        EXPECT_NEAR(std::get<0>(state)[0][0][j].item<double>(), h_ref[j], tol);
        EXPECT_NEAR(std::get<1>(state)[0][0][j].item<double>(), c_ref[j], tol);
      }
    }
  }
}

TEST(Cells, MatchLibTorchCells) {
  torch::manual_seed(1);
  const auto x = torch::randn({3, 5}, torch::kDouble);
  const auto h = torch::randn({3, 4}, torch::kDouble);
  const auto c = torch::randn({3, 4}, torch::kDouble);
  {
    LSTMCell ours(5, 4);
    torch::nn::LSTMCell ref(5, 4);
    ours->to(torch::kDouble);
    ref->to(torch::kDouble);
    testing::copy_parameters(*ours, *ref);
    auto [h1, c1] = ours->forward(x, {h, c});
    auto [h2, c2] = ref(x, std::make_tuple(h, c));
    EXPECT_LT(max_abs_diff(h1, h2), 1e-12);
    EXPECT_LT(max_abs_diff(c1, c2), 1e-12);
  }
  {
    GRUCell ours(5, 4);
    torch::nn::GRUCell ref(5, 4);
    ours->to(torch::kDouble);
    ref->to(torch::kDouble);
    testing::copy_parameters(*ours, *ref);
    EXPECT_LT(max_abs_diff(ours(x, h), ref(x, h)), 1e-12);
  }
  {
    RNNCell ours(5, 4);
    torch::nn::RNNCell ref(5, 4);
    ours->to(torch::kDouble);
    ref->to(torch::kDouble);
    testing::copy_parameters(*ours, *ref);
    EXPECT_LT(max_abs_diff(ours(x, h), ref(x, h)), 1e-12);
  }
}

// A step that records no gradients takes the custom recurrences' fused step
// (both products through nn/gemm.h, one pass of the nonlinearities); it must
// give what the autograd ops give, leave the given state alone, and take
// undefined states and non-contiguous inputs.
TEST(Cells, StepsWithoutAutogradMatchTheAutogradOps) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    const double tol = dtype == torch::kDouble ? 1e-12 : 2e-6;
    for (int64_t batch : {1, 7}) {
      const auto x = torch::randn({5, batch}, dtype).t();  // [batch, 5], not contiguous
      const auto h = torch::randn({batch, 4}, dtype);
      const auto c = torch::randn({batch, 4}, dtype);
      const auto h_before = h.clone(), c_before = c.clone();
      LSTMCell lstm(5, 4);
      GRUCell gru(5, 4);
      RNNCell rnn(5, 4);
      lstm->to(dtype);
      gru->to(dtype);
      rnn->to(dtype);
      for (bool with_state : {true, false}) {
        const auto hs = with_state ? h : Tensor(), cs = with_state ? c : Tensor();
        auto [h_ref, c_ref] = lstm->forward(x, {hs, cs});  // parameters require grad: the autograd ops
        const auto gru_ref = gru(x, hs), rnn_ref = rnn(x, hs);
        ASSERT_TRUE(h_ref.requires_grad() && gru_ref.requires_grad() && rnn_ref.requires_grad());
        torch::NoGradGuard no_grad;
        auto [h1, c1] = lstm->forward(x, {hs, cs});
        EXPECT_LT(max_abs_diff(h1, h_ref), tol) << dtype << " batch " << batch;
        EXPECT_LT(max_abs_diff(c1, c_ref), tol) << dtype << " batch " << batch;
        EXPECT_LT(max_abs_diff(gru(x, hs), gru_ref), tol) << dtype << " batch " << batch;
        EXPECT_LT(max_abs_diff(rnn(x, hs), rnn_ref), tol) << dtype << " batch " << batch;
      }
      EXPECT_TRUE(torch::equal(h, h_before) && torch::equal(c, c_before)) << "the given state was changed";
    }
  }
}

// In float32 training the LSTM cell is a one-step custom recurrence with the
// hand-written backward: outputs and every gradient (input, state, weights,
// biases) as LibTorch's cell gives them, also through several steps.
TEST(Cells, LstmCellTrainsAsLibTorchsCell) {
  torch::manual_seed(4);
  LSTMCell ours(6, 5);
  torch::nn::LSTMCell ref(6, 5);
  testing::copy_parameters(*ours, *ref);
  const auto x0 = torch::randn({3, 4, 6}), h0 = torch::randn({4, 5}), c0 = torch::randn({4, 5});
  const auto g = torch::randn({3, 4, 5});
  std::vector<Tensor> inputs[2];
  for (int mine : {0, 1}) {
    auto x = x0.clone().requires_grad_(), h = h0.clone().requires_grad_(), c = c0.clone().requires_grad_();
    auto hs = h, cs = c;
    Tensor loss = torch::zeros({});
    for (int64_t t = 0; t < 3; ++t) {
      std::tie(hs, cs) = mine ? ours->forward(x[t], {hs, cs}) : ref(x[t], std::make_tuple(hs, cs));
      loss = loss + (hs * g[t]).sum() + cs.sum() * 0.5;
    }
    loss.backward();
    inputs[mine] = {hs.detach(), cs.detach(), x.grad(), h.grad(), c.grad()};
  }
  for (size_t i = 0; i < inputs[0].size(); ++i) EXPECT_LT(max_abs_diff(inputs[1][i], inputs[0][i]), 2e-5) << i;
  const auto mine = ours->named_parameters(), theirs = ref->named_parameters();
  for (const auto& p : mine) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_LT(max_abs_diff(p.value().grad(), theirs[p.key()].grad()), 2e-5) << p.key();
  }
}

TEST(Cells, RejectBadShapes) {
  LSTMCell cell(5, 4);
  auto msg = testing::error_of([&] { cell(torch::randn({3, 6})); });
  EXPECT_NE(msg.find("[batch, 5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 6]"), std::string::npos) << msg;
  msg = testing::error_of([&] { cell->forward(torch::randn({3, 5}), {torch::randn({2, 4}), Tensor()}); });
  EXPECT_NE(msg.find("[3, 4]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 4]"), std::string::npos) << msg;
}

TEST(Cells, ForgetBias) {
  LSTMCell cell(CellOptions(3, 4).forget_bias(1.0));
  auto effective = (cell->bias_ih + cell->bias_hh).narrow(0, 4, 4);
  EXPECT_LT(max_abs_diff(effective, torch::ones({4})), 1e-7);
  for (auto impl : {Implementation::kCustom, Implementation::kBuiltin}) {
  auto lstm = make_recurrent(RecurrentOptions(3, 4).num_layers(2).forget_bias(1.0).impl(impl));
  auto params = lstm->named_parameters();
  auto f = (params["bias_ih_l1"] + params["bias_hh_l1"]).narrow(0, 4, 4);
  EXPECT_LT(max_abs_diff(f, torch::ones({4})), 1e-7);
  }
}

TEST(Init, UniformWithinOneOverSqrtHidden) {
  auto m = make_recurrent(RecurrentOptions(7, 16).num_layers(2).bidirectional(true));
  for (const auto& p : m->named_parameters()) {
    EXPECT_LE(p.value().abs().max().item<double>(), 0.25 + 1e-7) << p.key();
    EXPECT_GT(p.value().abs().max().item<double>(), 0.2) << p.key();
  }
}

// Central finite differences in float64 against the hand-written backward,
// through two stacked bidirectional layers with variable lengths.
TEST(GradCheck, FiniteDifferencesFloat64) {
  for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN}) {
    torch::manual_seed(3);
    CustomRecurrent rnn(RecurrentOptions(3, 4).kind(kind).num_layers(2).bidirectional(true));
    rnn->to(torch::kDouble);
    const int64_t T = 4, B = 3, L = 4;
    auto x = torch::randn({T, B, 3}, torch::kDouble).requires_grad_(true);
    auto h0 = torch::randn({L, B, 4}, torch::kDouble).requires_grad_(true);
    auto c0 = torch::randn({L, B, 4}, torch::kDouble).requires_grad_(true);
    const auto lengths = torch::tensor({2, 4, 3}, torch::kLong);
    const auto wy = torch::randn({T, B, 8}, torch::kDouble);
    const auto wh = torch::randn({L, B, 4}, torch::kDouble);
    const bool lstm = kind == RecurrentKind::kLSTM;
    auto loss_fn = [&] {
      auto out = rnn->forward(x, lengths, {h0, lstm ? c0 : Tensor()});
      auto loss = (out.output * wy).sum() + (out.state.h * wh).sum();
      if (lstm) loss = loss + (out.state.c * wh * 0.5).sum();
      return loss;
    };
    std::vector<Tensor> inputs{x, h0};
    if (lstm) inputs.push_back(c0);
    for (auto& p : rnn->parameters()) inputs.push_back(p);
    const auto grads = torch::autograd::grad({loss_fn()}, inputs);
    testing::expect_gradients_match_finite_differences(loss_fn, inputs, grads, 1e-6, to_string(kind));
  }
}

}  // namespace
}  // namespace cellstate
