// The custom recurrent modules against LibTorch's built-in ones: outputs,
// final states and every gradient, over the whole grid of configurations;
// semantics of padding, dropout, stepping; errors on bad input.
#include <sstream>

#include "cellstate/nn/rnn.h"
#include "test_util.h"

namespace cellstate {
namespace {

using testing::error_of;
using testing::max_abs_diff;
using torch::Tensor;

struct Config {
  RecurrentKind kind;
  int64_t layers;
  bool bidirectional;
  bool batch_first;
  bool variable_lengths;
  torch::Dtype dtype;
};

std::string name_of(const ::testing::TestParamInfo<Config>& info) {
  const auto& c = info.param;
  std::ostringstream s;
  s << to_string(c.kind) << "_l" << c.layers << (c.bidirectional ? "_bi" : "_uni")
    << (c.batch_first ? "_batchfirst" : "_timefirst") << (c.variable_lengths ? "_varlen" : "_fixed")
    << (c.dtype == torch::kDouble ? "_f64" : "_f32");
  return s.str();
}

std::vector<Config> all_configs() {
  std::vector<Config> out;
  for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN})
    for (int64_t layers : {1, 2})
      for (bool bi : {false, true})
        for (bool bf : {false, true})
          for (bool varlen : {false, true})
            for (auto dtype : {torch::kFloat, torch::kDouble})
              out.push_back({kind, layers, bi, bf, varlen, dtype});
  return out;
}

class Equivalence : public ::testing::TestWithParam<Config> {};

TEST_P(Equivalence, CustomMatchesBuiltin) {
  const auto& c = GetParam();
  torch::manual_seed(7);
  const int64_t T = 6, B = 4, I = 5, H = 3;
  const auto opts = RecurrentOptions(I, H)
                        .kind(c.kind)
                        .num_layers(c.layers)
                        .bidirectional(c.bidirectional)
                        .batch_first(c.batch_first);
  auto custom = make_recurrent(RecurrentOptions(opts).impl(Implementation::kCustom));
  auto builtin = make_recurrent(RecurrentOptions(opts).impl(Implementation::kBuiltin));
  custom->to(c.dtype);
  builtin->to(c.dtype);
  testing::copy_parameters(*custom, *builtin);

  const int64_t S = c.layers * (c.bidirectional ? 2 : 1);
  const auto x0 = c.batch_first ? torch::randn({B, T, I}, c.dtype) : torch::randn({T, B, I}, c.dtype);
  const auto h00 = torch::randn({S, B, H}, c.dtype);
  const auto c00 = torch::randn({S, B, H}, c.dtype);
  const auto lengths = c.variable_lengths ? torch::tensor({3, 6, 1, 4}, torch::kLong) : Tensor();
  const auto wy = torch::randn({T, B, (c.bidirectional ? 2 : 1) * H}, c.dtype);
  const auto wh = torch::randn({S, B, H}, c.dtype);
  const bool lstm = c.kind == RecurrentKind::kLSTM;

  struct Result {
    RecurrentOutput out;
    std::vector<Tensor> grads;
  };
  auto run = [&](RecurrentModuleImpl& m) {
    auto x = x0.clone().requires_grad_(true);
    auto h0 = h00.clone().requires_grad_(true);
    auto c0 = c00.clone().requires_grad_(true);
    auto out = m.forward(x, lengths, {h0, lstm ? c0 : Tensor()});
    auto y = c.batch_first ? out.output.transpose(0, 1) : out.output;
    auto loss = (y * wy).sum() + (out.state.h * wh).sum();
    if (lstm) loss = loss + (out.state.c * wh.flip(0)).sum();
    loss.backward();
    Result r{out, {x.grad(), h0.grad()}};
    if (lstm) r.grads.push_back(c0.grad());
    for (auto& p : m.parameters()) r.grads.push_back(p.grad());
    return r;
  };
  const auto a = run(*custom);
  const auto b = run(*builtin);
  const double tol = c.dtype == torch::kDouble ? 1e-10 : 1e-5;
  EXPECT_LT(max_abs_diff(a.out.output, b.out.output), tol);
  EXPECT_LT(max_abs_diff(a.out.state.h, b.out.state.h), tol);
  EXPECT_LT(max_abs_diff(a.out.state.c, b.out.state.c), tol);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  const auto names = custom->named_parameters();
  for (size_t k = 0; k < a.grads.size(); ++k) {
    const std::string what = k < (lstm ? 3u : 2u) ? "input/state " + std::to_string(k)
                                                  : names.keys()[k - (lstm ? 3 : 2)];
    EXPECT_LT(max_abs_diff(a.grads[k], b.grads[k]), tol) << "gradient of " << what;
  }
  if (c.variable_lengths) {
    // Padded outputs are exactly zero.
    auto y = c.batch_first ? a.out.output.transpose(0, 1) : a.out.output;
    EXPECT_EQ(y.narrow(0, 3, 3).select(1, 0).abs().max().item<double>(), 0.0);
    EXPECT_EQ(y.narrow(0, 1, 5).select(1, 2).abs().max().item<double>(), 0.0);
  }
  // The inference path (no autograd) computes the same as the training path.
  torch::NoGradGuard no_grad;
  // A full-length pass first leaves non-zero values in memory that the next
  // pass's output may reuse (its padded rows are written, not preset).
  custom->forward(x0, Tensor(), {h00, lstm ? c00 : Tensor()});
  auto inf = custom->forward(x0, lengths, {h00, lstm ? c00 : Tensor()});
  EXPECT_LT(max_abs_diff(inf.output, a.out.output), tol);
  EXPECT_LT(max_abs_diff(inf.state.h, a.out.state.h), tol);
  if (c.variable_lengths) {
    auto y = c.batch_first ? inf.output.transpose(0, 1) : inf.output;
    EXPECT_EQ(y.narrow(0, 3, 3).select(1, 0).abs().max().item<double>(), 0.0);
    EXPECT_EQ(y.narrow(0, 1, 5).select(1, 2).abs().max().item<double>(), 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, Equivalence, ::testing::ValuesIn(all_configs()), name_of);

TEST(Recurrent, StateDictInterchanges) {
  for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN}) {
    auto opts = RecurrentOptions(4, 3).kind(kind).num_layers(2).bidirectional(true);
    CustomRecurrent custom(opts);
    torch::nn::LSTM ref_lstm(torch::nn::LSTMOptions(4, 3).num_layers(2).bidirectional(true));
    BuiltinRecurrent builtin(RecurrentOptions(opts).impl(Implementation::kBuiltin));
    std::vector<std::string> a, b;
    for (auto& p : custom->named_parameters()) a.push_back(p.key());
    for (auto& p : builtin->named_parameters()) b.push_back(p.key());
    EXPECT_EQ(a, b);
    if (kind == RecurrentKind::kLSTM) {
      std::vector<std::string> r;
      for (auto& p : ref_lstm->named_parameters()) r.push_back(p.key());
      EXPECT_EQ(a, r);
    }
    // Save one, load into the other through torch::save / torch::load.
    std::stringstream buffer;
    torch::save(custom, buffer);
    torch::load(builtin, buffer);
    torch::NoGradGuard g;
    auto x = torch::randn({5, 2, 4});
    EXPECT_LT(max_abs_diff(custom->forward(x).output, builtin->forward(x).output), 1e-5);
  }
}

TEST(Recurrent, SequenceAloneEqualsSequenceInPaddedBatch) {
  torch::manual_seed(2);
  CustomRecurrent rnn(RecurrentOptions(3, 5).num_layers(2).bidirectional(true));
  rnn->eval();
  torch::NoGradGuard g;
  auto batch = torch::randn({9, 3, 3});
  auto lengths = torch::tensor({4, 9, 6}, torch::kLong);
  auto all = rnn->forward(batch, lengths);
  auto alone = rnn->forward(batch.narrow(0, 0, 4).narrow(1, 0, 1));
  EXPECT_LT(max_abs_diff(all.output.narrow(0, 0, 4).narrow(1, 0, 1), alone.output), 1e-6);
  EXPECT_LT(max_abs_diff(all.state.h.narrow(1, 0, 1), alone.state.h), 1e-6);
  EXPECT_LT(max_abs_diff(all.state.c.narrow(1, 0, 1), alone.state.c), 1e-6);
}

TEST(Recurrent, DropoutOnlyBetweenLayersAndOnlyInTraining) {
  torch::manual_seed(4);
  auto x = torch::randn({5, 3, 4});
  CustomRecurrent two(RecurrentOptions(4, 8).num_layers(2).dropout(0.5));
  two->train();
  auto a = two->forward(x).output;
  auto b = two->forward(x).output;
  EXPECT_GT(max_abs_diff(a, b), 1e-4) << "dropout must act in training mode";
  two->eval();
  auto c = two->forward(x).output;
  auto d = two->forward(x).output;
  EXPECT_EQ(max_abs_diff(c, d), 0.0) << "evaluation must be deterministic";
  // Never after the last layer: a one-layer module with dropout is deterministic.
  CustomRecurrent one(RecurrentOptions(4, 8).num_layers(1).dropout(0.5));
  one->train();
  EXPECT_EQ(max_abs_diff(one->forward(x).output, one->forward(x).output), 0.0);
}

TEST(Recurrent, StepByStepEqualsWholeSequence) {
  for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN}) {
    torch::manual_seed(5);
    CustomRecurrent rnn(RecurrentOptions(3, 6).kind(kind).num_layers(2));
    torch::NoGradGuard g;
    auto x = torch::randn({7, 2, 3});
    auto whole = rnn->forward(x);
    RecurrentState state;
    for (int64_t t = 0; t < 7; ++t) {
      state = rnn->step(x[t], state);
      EXPECT_LT(max_abs_diff(state.h[1], whole.output[t]), 1e-6) << to_string(kind) << " t=" << t;
    }
    EXPECT_LT(max_abs_diff(state.h, whole.state.h), 1e-6);
    EXPECT_LT(max_abs_diff(state.c, whole.state.c), 1e-6);
    // In place, with the module's reused workspaces.
    const bool lstm = kind == RecurrentKind::kLSTM;
    RecurrentState own{torch::zeros({2, 2, 6}), lstm ? torch::zeros({2, 2, 6}) : Tensor()};
    const auto* h_data = own.h.data_ptr<float>();
    for (int64_t t = 0; t < 7; ++t) rnn->step_(x[t], own);
    EXPECT_EQ(own.h.data_ptr<float>(), h_data);
    EXPECT_LT(max_abs_diff(own.h, whole.state.h), 1e-6);
    EXPECT_LT(max_abs_diff(own.c, whole.state.c), 1e-6);
    auto msg = error_of([&] { rnn->step_(torch::randn({2, 3}), own = RecurrentState{}); });
    EXPECT_NE(msg.find("expected a defined state"), std::string::npos) << msg;
  }
  CustomRecurrent bi(RecurrentOptions(3, 4).bidirectional(true));
  auto msg = error_of([&] { bi->step(torch::randn({1, 3})); });
  EXPECT_NE(msg.find("bidirectional"), std::string::npos) << msg;
}

TEST(Recurrent, BadInputsGiveClearErrors) {
  for (auto impl : {Implementation::kCustom, Implementation::kBuiltin}) {
    auto m = make_recurrent(RecurrentOptions(4, 3).num_layers(2).impl(impl));
    auto msg = error_of([&] { m->forward(torch::randn({5, 4})); });
    EXPECT_NE(msg.find("expected input of rank 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[5, 4]"), std::string::npos) << msg;
    msg = error_of([&] { m->forward(torch::randn({5, 2, 4}, torch::kDouble)); });
    EXPECT_NE(msg.find("expected input of type Float"), std::string::npos) << msg;
    msg = error_of([&] { m->forward(torch::randn({5, 2, 7})); });
    EXPECT_NE(msg.find("expected input feature size 4, got 7"), std::string::npos) << msg;
    msg = error_of([&] { m->forward(torch::randn({5, 2, 4}), torch::tensor({0, 5})); });
    EXPECT_NE(msg.find("expected every length in [1, 5], got lengths[0] = 0"), std::string::npos)
        << msg;
    msg = error_of([&] { m->forward(torch::randn({5, 2, 4}), torch::tensor({3, 6})); });
    EXPECT_NE(msg.find("got lengths[1] = 6"), std::string::npos) << msg;
    msg = error_of([&] { m->forward(torch::randn({5, 2, 4}), torch::tensor({3, 2, 1})); });
    EXPECT_NE(msg.find("expected lengths of shape [2], got [3]"), std::string::npos) << msg;
    msg = error_of([&] { m->forward(torch::randn({5, 2, 4}), Tensor(), {torch::zeros({1, 2, 3}), Tensor()}); });
    EXPECT_NE(msg.find("expected initial h of shape [2, 2, 3], got [1, 2, 3]"), std::string::npos)
        << msg;
    msg = error_of([&] { m->forward(torch::randn({5, 2, 4}), Tensor(), {Tensor(), torch::zeros({2, 3, 3})}); });
    EXPECT_NE(msg.find("expected initial c of shape [2, 2, 3], got [2, 3, 3]"), std::string::npos)
        << msg;
  }
  auto gru = make_recurrent(RecurrentOptions(4, 3).kind(RecurrentKind::kGRU));
  auto msg = error_of([&] { gru->forward(torch::randn({5, 2, 4}), Tensor(), {Tensor(), torch::zeros({1, 2, 3})}); });
  EXPECT_NE(msg.find("has no cell state"), std::string::npos) << msg;
  msg = error_of([&] { make_recurrent(RecurrentOptions(4, 0)); });
  EXPECT_NE(msg.find("hidden_size must be positive, got 0"), std::string::npos) << msg;
  msg = error_of([&] { make_recurrent(RecurrentOptions(4, 3).dropout(1.5)); });
  EXPECT_NE(msg.find("dropout must be in [0, 1), got 1.5"), std::string::npos) << msg;
  EXPECT_THROW(parse_recurrent_kind("transformer"), std::invalid_argument);
  EXPECT_EQ(parse_implementation("builtin"), Implementation::kBuiltin);
}

TEST(Recurrent, NoBiasMatchesBuiltin) {
  torch::manual_seed(6);
  auto opts = RecurrentOptions(3, 4).bias(false).bidirectional(true);
  auto a = make_recurrent(opts);
  auto b = make_recurrent(RecurrentOptions(opts).impl(Implementation::kBuiltin));
  testing::copy_parameters(*a, *b);
  auto x = torch::randn({4, 2, 3});
  auto ya = a->forward(x, torch::tensor({2, 4})).output;
  auto yb = b->forward(x, torch::tensor({2, 4})).output;
  EXPECT_LT(max_abs_diff(ya, yb), 1e-5);
  ya.sum().backward();
  yb.sum().backward();
  EXPECT_LT(max_abs_diff(a->named_parameters()["weight_hh_l0_reverse"].grad(),
                         b->named_parameters()["weight_hh_l0_reverse"].grad()),
            1e-5);
}

}  // namespace
}  // namespace cellstate
