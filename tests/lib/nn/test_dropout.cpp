// AWD-LSTM's dropouts (nn/dropout.h) and the recurrent modules' weight
// dropout: masks act only in training, one mask per forward call (weights)
// or per sequence (locked), gradients against finite differences in float64,
// and the custom kernels equal the built-in wrapper under the same masks.
#include "cellstate/nn/dropout.h"
#include "cellstate/nn/rnn.h"
#include "test_util.h"

namespace cellstate {
namespace {

using testing::max_abs_diff;
using torch::Tensor;

/// The builtin module with the custom one's parameters.
BuiltinRecurrent builtin_copy(const CustomRecurrent& custom) {
  BuiltinRecurrent builtin(custom->options);
  torch::NoGradGuard no_grad;
  auto mine = builtin->named_parameters(false);
  for (const auto& p : custom->named_parameters(false)) mine[p.key()].copy_(p.value());
  return builtin;
}

TEST(LockedDropout, OneMaskPerSequenceSharedOverTime) {
  torch::manual_seed(1);
  const auto x = torch::ones({6, 4, 50});
  const auto y = locked_dropout(x, 0.5);
  for (int64_t t = 1; t < 6; ++t) EXPECT_TRUE(torch::equal(y[t], y[0])) << "step " << t;
  EXPECT_TRUE(((y == 0) | (y == 2)).all().item<bool>()) << "kept values scaled by 1/(1-p)";
  EXPECT_GT((y[0] == 0).sum().item<int64_t>(), 40);
  EXPECT_LT((y[0] == 0).sum().item<int64_t>(), 160);
  EXPECT_TRUE(torch::equal(locked_dropout(x, 0.0), x));
  // Packed rows: step t holds sequences 0 .. batch_sizes[t] - 1.
  const auto sizes = torch::tensor({3, 3, 2, 1}, torch::kLong);
  const auto packed = locked_dropout_packed(torch::ones({9, 20}), sizes, 0.5);
  const std::vector<int64_t> sequence_of_row{0, 1, 2, 0, 1, 2, 0, 1, 0};
  for (int64_t r = 0; r < 9; ++r) {
    const int64_t first = sequence_of_row[static_cast<size_t>(r)];  // the row of step 0 is the sequence's index
    EXPECT_TRUE(torch::equal(packed[r], packed[first])) << "row " << r;
  }
  EXPECT_THROW(locked_dropout(x, 1.0), c10::Error);
}

TEST(Dropout, MasksFollowTheSeedAtAnyThreadCountAndKeepTheirShare) {
  const int threads = at::get_num_threads();
  const auto x = torch::ones({37, 1001});  // an odd number of elements
  for (const double p : {0.1, 0.5, 0.9}) {
    at::set_num_threads(1);
    torch::manual_seed(3);
    const auto one = cellstate::dropout(x, p, true);
    at::set_num_threads(2);
    torch::manual_seed(3);
    const auto two = cellstate::dropout(x, p, true);
    EXPECT_TRUE(torch::equal(one, two)) << "p " << p;
    EXPECT_FALSE(torch::equal(cellstate::dropout(x, p, true), two)) << "the next call draws a new mask";
    const double kept = (one != 0).to(torch::kDouble).mean().item<double>();
    EXPECT_NEAR(kept, 1 - p, 0.01) << "p " << p;  // 37,037 draws: 5 standard deviations
    EXPECT_TRUE(((one == 0) | ((one - 1 / (1 - p)).abs() < 1e-6)).all().item<bool>());
    // Neighbouring elements (the two halves of one hash) and rows independent:
    // the share of kept pairs is (1 - p)^2.
    const auto k = (one != 0).to(torch::kDouble).reshape({-1});
    const auto even = k.slice(0, 0, k.size(0) - 1, 2), odd = k.slice(0, 1, k.size(0), 2);
    EXPECT_NEAR((even * odd).mean().item<double>(), (1 - p) * (1 - p), 0.015) << "p " << p;
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(cellstate::dropout(x, 0.5, false), x));
  EXPECT_TRUE(torch::equal(cellstate::dropout(x, 0.0, true), x));
  EXPECT_THROW(cellstate::dropout(x, 1.0, true), c10::Error);
  EXPECT_THROW(cellstate::dropout(x, -0.1, true), c10::Error);
  // The module acts in training only; masks in x's dtype; gradients through the mask.
  Dropout drop(0.5);
  const auto b = torch::randn({8, 16}, torch::kBFloat16);
  EXPECT_EQ(drop(b).scalar_type(), torch::kBFloat16);
  drop->eval();
  EXPECT_TRUE(torch::equal(drop(b), b));
  drop->train();
  const auto w = torch::randn({64, 64}, torch::requires_grad());
  const auto y = drop(w);
  y.sum().backward();
  EXPECT_TRUE(torch::equal(w.grad(), (y != 0).to(torch::kFloat) * 2));
}

TEST(VocabularyDropout, WholeRowsDroppedOrScaled) {
  torch::manual_seed(2);
  const auto e = torch::randn({200, 8});
  const auto d = vocabulary_dropout(e, 0.25);
  int64_t dropped = 0;
  for (int64_t v = 0; v < 200; ++v) {
    if (d[v].abs().sum().item<double>() == 0) {
      ++dropped;
    } else {
      EXPECT_LT(max_abs_diff(d[v], e[v] / 0.75), 1e-6) << "row " << v;
    }
  }
  EXPECT_GT(dropped, 25);
  EXPECT_LT(dropped, 80);
}

TEST(WeightDropout, ActsOnlyInTrainingWithOneMaskPerForwardCall) {
  for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN}) {
    torch::manual_seed(3);
    CustomRecurrent rnn(RecurrentOptions(5, 7).kind(kind).weight_dropout(0.5));
    const auto x = torch::randn({6, 3, 5});
    rnn->eval();
    const auto plain = rnn->forward(x).output;
    EXPECT_TRUE(torch::equal(plain, rnn->forward(x).output)) << "evaluation must be deterministic";
    rnn->train();
    torch::manual_seed(10);
    const auto a = rnn->forward(x).output;
    const auto b = rnn->forward(x).output;
    EXPECT_GT(max_abs_diff(a, b), 1e-4) << to_string(kind) << ": a new mask each forward call";
    EXPECT_GT(max_abs_diff(a, plain), 1e-4) << to_string(kind) << ": the mask acts in training";
    // The training output is the plain recurrence with weight_hh ⊙ M / (1 - p)
    // at every step, M the one mask drawn for the call.
    torch::manual_seed(10);
    const auto w_hh = rnn->named_parameters(false)["weight_hh_l0"];
    const auto mask = keep_mask(w_hh.sizes(), w_hh, 0.5);
    CustomRecurrent masked(RecurrentOptions(5, 7).kind(kind));
    {
      torch::NoGradGuard no_grad;
      auto target = masked->named_parameters(false);
      for (const auto& p : rnn->named_parameters(false)) target[p.key()].copy_(p.value());
      target["weight_hh_l0"].mul_(mask);
    }
    masked->eval();
    EXPECT_LT(max_abs_diff(a, masked->forward(x).output), 1e-6) << to_string(kind);
  }
}

// Central finite differences in float64 through two bidirectional layers with
// variable lengths, every input and parameter, the mask held fixed by seeding
// each forward call alike; a dropped weight gets no gradient.
TEST(WeightDropout, GradientsMatchFiniteDifferencesFloat64) {
  for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN}) {
    torch::manual_seed(4);
    CustomRecurrent rnn(
        RecurrentOptions(3, 4).kind(kind).num_layers(2).bidirectional(true).weight_dropout(0.4));
    rnn->to(torch::kDouble);
    rnn->train();
    const int64_t T = 4, B = 3;
    auto x = torch::randn({T, B, 3}, torch::kDouble).requires_grad_(true);
    const auto lengths = torch::tensor({2, 4, 3}, torch::kLong);
    const auto wy = torch::randn({T, B, 8}, torch::kDouble);
    auto loss_fn = [&] {
      torch::manual_seed(99);  // the same masks every call
      auto out = rnn->forward(x, lengths);
      return (out.output * wy).sum() + out.state.h.pow(2).sum();
    };
    std::vector<Tensor> inputs{x};
    for (auto& p : rnn->parameters()) inputs.push_back(p);
    const auto grads = torch::autograd::grad({loss_fn()}, inputs);
    const int64_t zero_grads =
        testing::expect_gradients_match_finite_differences(loss_fn, inputs, grads, 1e-6, to_string(kind));
    EXPECT_GT(zero_grads, 10) << to_string(kind) << ": dropped recurrent weights get no gradient";
  }
}

// The built-in wrapper masks the weights it passes to ATen's kernels: under
// the same seed it draws the same masks in the same order (layer by layer,
// forward direction first), so outputs, states and gradients agree.
TEST(WeightDropout, CustomEqualsBuiltinUnderTheSameMask) {
  for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN}) {
    for (bool bi : {false, true}) {
      for (bool varlen : {false, true}) {
        for (bool locked : {false, true}) {
          SCOPED_TRACE(to_string(kind) + (bi ? " bi" : " uni") + (varlen ? " varlen" : " fixed") +
                       (locked ? " locked" : ""));
          torch::manual_seed(5);
          // Locked dropout between the layers is compared too (one mask per
          // sequence in the sorted order both use); per-step dropout is not
          // (ATen and the custom layer draw it in different orders).
          CustomRecurrent custom(RecurrentOptions(4, 6)
                                     .kind(kind)
                                     .num_layers(2)
                                     .bidirectional(bi)
                                     .weight_dropout(0.5)
                                     .dropout(locked ? 0.3 : 0.0)
                                     .locked_dropout(locked));
          auto builtin = builtin_copy(custom);
          const auto x = torch::randn({5, 3, 4});
          const auto lengths = varlen ? torch::tensor({3, 5, 2}, torch::kLong) : Tensor();
          auto run = [&](RecurrentModuleImpl& m) {
            m.train();
            for (auto& p : m.parameters()) p.mutable_grad() = Tensor();
            torch::manual_seed(6);
            auto out = m.forward(x, lengths);
            auto loss = out.output.pow(2).sum() + out.state.h.sum();
            if (out.state.c.defined()) loss = loss + out.state.c.sum();
            loss.backward();
            std::vector<Tensor> r{out.output, out.state.h};
            for (const auto& p : m.named_parameters(false)) r.push_back(p.value().grad());
            return r;
          };
          const auto a = run(*custom), b = run(*builtin);
          ASSERT_EQ(a.size(), b.size());
          for (size_t i = 0; i < a.size(); ++i) EXPECT_LT(max_abs_diff(a[i], b[i]), 2e-5) << "tensor " << i;
        }
      }
    }
  }
}

TEST(WeightDropout, BadProbabilityIsRefused) {
  EXPECT_THROW(CustomRecurrent(RecurrentOptions(2, 3).weight_dropout(1.0)), c10::Error);
  EXPECT_THROW(BuiltinRecurrent(RecurrentOptions(2, 3).weight_dropout(-0.1)), c10::Error);
}

}  // namespace
}  // namespace cellstate
