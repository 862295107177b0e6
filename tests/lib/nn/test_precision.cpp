// Reduced precision of the products (nn/gemm.h MatmulPrecision): bfloat16
// operands with float32 sums equal the same products computed exactly from
// the rounded operands, the recurrent modules' forward and gradients under
// bf16 agree with float32 within bfloat16's rounding, and a CPU without
// AVX512_BF16 refuses bf16 instead of emulating it.
#include <gtest/gtest.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "cellstate/nn/gemm.h"
#include "cellstate/nn/quantize.h"
#include "cellstate/nn/rnn.h"
#include "test_util.h"

namespace cellstate {
namespace {

/// float32 values rounded to bfloat16, in float64.
torch::Tensor rounded(const torch::Tensor& t) { return t.to(torch::kBFloat16).to(torch::kDouble); }

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

/// Relative error of the whole tensor: ||a - b|| / ||b||.
double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  const auto bd = b.to(torch::kDouble);
  return (a.to(torch::kDouble) - bd).norm().item<double>() / std::max(1e-30, bd.norm().item<double>());
}

TEST(Precision, NamesParseAndTheDefaultIsFloat32) {
  EXPECT_EQ(parse_matmul_precision("fp32"), MatmulPrecision::kFloat32);
  EXPECT_EQ(parse_matmul_precision("bf16"), MatmulPrecision::kBFloat16);
  EXPECT_EQ(parse_matmul_precision("int8"), MatmulPrecision::kInt8);
  EXPECT_EQ(to_string(MatmulPrecision::kBFloat16), "bf16");
  EXPECT_EQ(to_string(MatmulPrecision::kInt8), "int8");
  try {
    parse_matmul_precision("fp8");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("fp32, bf16 or int8, got 'fp8'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(matmul_precision(), MatmulPrecision::kFloat32);
}

TEST(Precision, Bf16IsRefusedWhereTheCpuLacksIt) {
  if (cpu_supports_bf16()) {
    MatmulPrecisionGuard outer(MatmulPrecision::kBFloat16);
    EXPECT_EQ(matmul_precision(), MatmulPrecision::kBFloat16);
    {
      MatmulPrecisionGuard inner(MatmulPrecision::kFloat32);
      EXPECT_EQ(matmul_precision(), MatmulPrecision::kFloat32);
    }
    EXPECT_EQ(matmul_precision(), MatmulPrecision::kBFloat16);
  } else {
    const auto message = testing::error_of([] { MatmulPrecisionGuard g(MatmulPrecision::kBFloat16); });
    EXPECT_NE(message.find("AVX512_BF16"), std::string::npos) << message;
    EXPECT_THROW(set_default_matmul_precision(MatmulPrecision::kBFloat16), c10::Error);
  }
  EXPECT_EQ(matmul_precision(), MatmulPrecision::kFloat32) << "the guard restores the precision";
}

/// One product of every layout gemm_out takes: three shapes (a row vector,
/// a batch, a narrow output), a and b as they lie or transposed, beta 0 and
/// 1, with a bias. `check` gets the result and what it should be compared
/// with: the operands, the bias, `out` before the call, beta, and the inner size.
struct ProductCase {
  torch::Tensor out, a, b, bias, before;
  double beta;
  int64_t k;
  std::string name;
  /// a · b + bias (+ before) in float64 from the float32 operands.
  torch::Tensor exact() const {
    auto e = torch::mm(a.to(torch::kDouble), b.to(torch::kDouble)) + bias.to(torch::kDouble);
    return beta == 1 ? e + before.to(torch::kDouble) : e;
  }
};

template <typename Check>
void for_each_product(const Check& check) {
  struct Shape {
    int64_t m, k, n;
  };
  for (const auto sh : {Shape{1, 70, 5}, Shape{32, 65, 260}, Shape{113, 40, 3}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (double beta : {0.0, 1.0}) {
          ProductCase c;
          c.a = ta ? torch::randn({sh.k, sh.m}).t() : torch::randn({sh.m, sh.k});
          c.b = tb ? torch::randn({sh.n, sh.k}).t() : torch::randn({sh.k, sh.n});
          c.bias = torch::randn({sh.n});
          c.out = torch::randn({sh.m, sh.n});
          c.before = c.out.clone();
          c.beta = beta;
          c.k = sh.k;
          c.name = std::to_string(sh.m) + "x" + std::to_string(sh.k) + "x" + std::to_string(sh.n) + " ta " +
                   std::to_string(ta) + " tb " + std::to_string(tb) + " beta " + std::to_string(beta);
          gemm_out(c.out, c.a, c.b, beta, c.bias);
          check(c);
        }
      }
    }
  }
}

TEST(Precision, Bf16ProductsEqualExactProductsOfRoundedOperands) {
  if (!cpu_supports_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  torch::manual_seed(11);
  MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);
  for_each_product([](const ProductCase& c) {
    auto want = torch::mm(rounded(c.a), rounded(c.b)) + c.bias.to(torch::kDouble);
    if (c.beta == 1) want += c.before.to(torch::kDouble);
    // float32 sums of k exact products: a few ulps of sqrt(k)-sized sums.
    EXPECT_LT(max_diff(c.out, want), 2e-5 * c.k) << c.name;
    // ...and not the float32 product: bfloat16 rounding shows.
    EXPECT_GT(max_diff(c.out, c.exact()), 1e-3) << c.name << ": computed in float32";
  });
  // A PackedMatrix built for bf16 products (a bfloat16 packed copy), and
  // float64 (never reduced).
  const auto w = torch::randn({1040, 65});
  const PackedMatrix packed(w.t(), 32, 8);
  const auto x = torch::randn({32, 65});
  auto out = torch::empty({32, 1040});
  for (int use = 0; use < 2; ++use) {
    packed.gemm_out(out, x);
    EXPECT_LT(max_diff(out, torch::mm(rounded(x), rounded(w).t())), 2e-5 * 65) << "product " << use;
  }
  {
    MatmulPrecisionGuard fp32(MatmulPrecision::kFloat32);  // built under bf16, used at fp32
    packed.gemm_out(out, x);
    EXPECT_LT(max_diff(out, torch::mm(x.to(torch::kDouble), w.t().to(torch::kDouble))), 1e-4);
  }
  // Inference keeps bfloat16 copies of the weights: an in-place update, or
  // another tensor at the same address, is seen.
  {
    torch::NoGradGuard no_grad;
    auto wi = torch::randn({65, 260});
    const auto first = gemm(x, wi);
    EXPECT_TRUE(torch::equal(gemm(x, wi), first));
    wi.mul_(2);  // exact in bfloat16 too
    EXPECT_LT(max_diff(gemm(x, wi), first * 2), 1e-4);
    const void* address = wi.data_ptr();
    wi = torch::Tensor();
    const auto other = torch::randn({65, 260});
    EXPECT_LT(max_diff(gemm(x, other), torch::mm(rounded(x), rounded(other))), 2e-5 * 65)
        << (other.data_ptr() == address ? "same address" : "another address");
    // The packed bfloat16 copy is kept too, and an update is seen by the
    // next PackedMatrix of the weight.
    auto wp = torch::randn({1040, 65});
    const auto xp = torch::randn({32, 65});
    auto yp = torch::empty({32, 1040});
    for (int round = 0; round < 2; ++round) {
      const PackedMatrix p(wp.t(), 32, 8);
      for (int use = 0; use < 2; ++use) {
        p.gemm_out(yp, xp);
        EXPECT_LT(max_diff(yp, torch::mm(rounded(xp), rounded(wp).t())), 2e-5 * 65) << round << use;
      }
      wp.add_(1);
    }
  }
  const auto ad = torch::randn({4, 9}, torch::kDouble), bd = torch::randn({9, 3}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(gemm(ad, bd), torch::mm(ad, bd), 1e-12, 1e-12));
}

// The bfloat16 copies kept for products without autograd belong to live
// tensors: a copy of a freed operand (a training step's activations, which
// weight-gradient products multiply) is swept out, and the cache does not
// grow step after step.
TEST(Precision, CopiesOfFreedOperandsAreDropped) {
  if (!cpu_supports_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  torch::manual_seed(12);
  MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({8, 128});
  const auto w = torch::randn({128, 256});  // 64 KB as bfloat16
  const auto want = torch::mm(rounded(x), rounded(w));
  for (int step = 0; step < 300; ++step) {
    const auto temporary = torch::randn({128, 256});
    EXPECT_LT(max_diff(gemm(x, temporary), torch::mm(rounded(x), rounded(temporary))), 2e-5 * 128) << step;
    EXPECT_LT(max_diff(gemm(x, w), want), 2e-5 * 128) << step;
  }
  // 300 temporaries kept would be 19 MB; live ones and those not yet swept
  // stay below 64 entries.
  EXPECT_LE(gemm_counters().converted_bytes, 64 * 128 * 256 * 2);
  EXPECT_GE(gemm_counters().converted_bytes, 128 * 256 * 2) << "w's copy should be kept";
}

TEST(Precision, LinearUnderAutogradTakesGemmsBackward) {
  if (!cpu_supports_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  torch::manual_seed(12);
  // float64 is never reduced: under bf16, linear stays LibTorch's (exact gradients).
  {
    MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);
    const auto x = torch::randn({3, 4, 10}, torch::kDouble).requires_grad_();
    const auto w = torch::randn({6, 10}, torch::kDouble).requires_grad_();
    const auto bias = torch::randn({6}, torch::kDouble).requires_grad_();
    const auto weights = torch::linspace(-1, 1, 6, torch::kDouble);
    auto loss = [&] { return (linear(x, w, bias) * weights).sum(); };
    loss().backward();
    testing::expect_gradients_match_finite_differences(loss, {x, w, bias}, {x.grad(), w.grad(), bias.grad()}, 1e-6,
                                                       "linear");
  }
  // float32 under bf16: the autograd function. Its forward and backward are
  // bf16 products with float32 sums: dx = dy · w, dw = dyᵀ · x, each equal
  // to the exact product of the rounded operands (to float32 summation
  // error), and within bfloat16's error of LibTorch's float32 linear.
  for (bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "bias" : "no bias");
    MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);
    const auto xf = torch::randn({5, 7, 16}).requires_grad_();
    const auto wf = torch::randn({9, 16}).requires_grad_();
    const auto bf = with_bias ? torch::randn({9}).requires_grad_() : torch::Tensor();
    const auto g = torch::randn({5, 7, 9});
    const auto y = linear(xf, wf, bf);
    y.backward(g);
    const auto x2 = xf.detach().reshape({-1, 16}), g2 = g.reshape({-1, 9});
    auto want_y = torch::mm(rounded(x2), rounded(wf.detach()).t());
    if (with_bias) want_y += bf.detach().to(torch::kDouble);
    EXPECT_LT(max_diff(y.detach().reshape({-1, 9}), want_y), 1e-4);
    EXPECT_LT(max_diff(xf.grad().reshape({-1, 16}), torch::mm(rounded(g2), rounded(wf.detach()))), 1e-4);
    EXPECT_LT(max_diff(wf.grad(), torch::mm(rounded(g2).t(), rounded(x2))), 1e-4);
    if (with_bias) EXPECT_LT(max_diff(bf.grad(), g2.sum(0)), 1e-4);
    const auto mine = std::vector<torch::Tensor>{xf.grad().clone(), wf.grad().clone()};
    xf.grad().zero_();
    wf.grad().zero_();
    torch::nn::functional::linear(xf, wf, bf).backward(g);
    // bfloat16 operands: relative errors of a few 2^-9.
    EXPECT_LT(relative_error(mine[0], xf.grad()), 1e-2);
    EXPECT_LT(relative_error(mine[1], wf.grad()), 1e-2);
    EXPECT_GT(max_diff(mine[1], wf.grad()), 0.0) << "computed in float32";
  }
}

TEST(Precision, LinearLayerIsLibTorchsInFloat32) {
  torch::manual_seed(14);
  const auto x = torch::randn({6, 5, 12}).requires_grad_();
  const auto w = torch::randn({7, 12}).requires_grad_();
  const auto b = torch::randn({7}).requires_grad_();
  const auto g = torch::randn({6, 5, 7});
  auto run = [&](bool mine) {
    x.mutable_grad() = torch::Tensor();
    w.mutable_grad() = torch::Tensor();
    auto y = mine ? linear_layer(x, w, b) : torch::nn::functional::linear(x, w, b);
    y.backward(g);
    return std::vector<torch::Tensor>{y.detach(), x.grad().clone(), w.grad().clone()};
  };
  {
    MatmulPrecisionGuard fp32(MatmulPrecision::kFloat32);
    const auto mine = run(true), want = run(false);
    for (size_t i = 0; i < mine.size(); ++i) EXPECT_TRUE(torch::equal(mine[i], want[i])) << i;
  }
  if (!cpu_supports_bf16()) return;
  MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);
  const auto mine = run(true);
  auto want = torch::mm(rounded(x.detach().reshape({-1, 12})), rounded(w.detach()).t()) + b.detach().to(torch::kDouble);
  EXPECT_LT(max_diff(mine[0].reshape({-1, 7}), want), 1e-4) << "bf16 products";
  EXPECT_GT(max_diff(mine[0], torch::nn::functional::linear(x, w, b).detach()), 0.0);
}

/// One forward and backward pass of `rnn` over variable lengths at
/// `precision`: its output, and the gradients of the input and of every
/// parameter. Results and master weights' gradients stay float32.
struct Pass {
  torch::Tensor output;
  std::vector<torch::Tensor> grads;
};

Pass forward_backward(RecurrentModuleImpl& rnn, const torch::Tensor& x, const torch::Tensor& lengths,
                      MatmulPrecision precision) {
  MatmulPrecisionGuard guard(precision);
  rnn.zero_grad();
  const auto xg = x.clone().requires_grad_();
  auto out = rnn.forward(xg, lengths);
  EXPECT_EQ(out.output.scalar_type(), torch::kFloat);
  EXPECT_EQ(out.state.h.scalar_type(), torch::kFloat);
  (out.output * torch::linspace(-1, 1, out.output.size(-1))).sum().backward();
  Pass pass{out.output.detach(), {xg.grad()}};
  for (const auto& p : rnn.parameters()) {
    EXPECT_EQ(p.grad().scalar_type(), torch::kFloat) << "master weights stay float32";
    pass.grads.push_back(p.grad().clone());
  }
  return pass;
}

/// For LSTM, GRU and RNN, one and two directions, 2 layers of `impl`:
/// bf16's output within 3e-2 abs / 1e-2 relative of fp32's and every
/// gradient within 3e-2 relative; then `more(module, x, lengths, fp32, bf16)`.
template <typename More>
void expect_bf16_near_fp32(Implementation impl, const More& more) {
  for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN}) {
    for (bool bidirectional : {false, true}) {
      SCOPED_TRACE(to_string(impl) + " " + to_string(kind) + (bidirectional ? " bi" : " uni"));
      torch::manual_seed(13);
      auto rnn = make_recurrent(RecurrentOptions(24, 32).kind(kind).num_layers(2).bidirectional(bidirectional).impl(impl));
      const auto x = torch::randn({12, 5, 24});
      const auto lengths = torch::tensor({12, 7, 12, 3, 9}, torch::kLong);
      const auto f32 = forward_backward(*rnn, x, lengths, MatmulPrecision::kFloat32);
      const auto b16 = forward_backward(*rnn, x, lengths, MatmulPrecision::kBFloat16);
      EXPECT_LT(max_diff(b16.output, f32.output), 3e-2);
      EXPECT_LT(relative_error(b16.output, f32.output), 1e-2);
      EXPECT_GT(max_diff(b16.output, f32.output), 0.0) << "bf16 products were not used";
      for (size_t i = 0; i < f32.grads.size(); ++i)
        EXPECT_LT(relative_error(b16.grads[i], f32.grads[i]), 3e-2) << "gradient " << i;
      more(*rnn, x, lengths, f32, b16);
    }
  }
}

TEST(Precision, RecurrentModulesUnderBf16AgreeWithFloat32) {
  if (!cpu_supports_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  expect_bf16_near_fp32(Implementation::kCustom, [](RecurrentModuleImpl& rnn, const torch::Tensor& x,
                                                    const torch::Tensor& lengths, const Pass&, const Pass& b16) {
    // Inference (no autograd) takes the same products.
    torch::NoGradGuard no_grad;
    MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
    EXPECT_LT(max_diff(rnn.forward(x, lengths).output, b16.output), 1e-5);
  });
}

TEST(Precision, BuiltinRecurrencesTakeAutocastsBf16Products) {
  if (!cpu_supports_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  expect_bf16_near_fp32(Implementation::kBuiltin, [](RecurrentModuleImpl& rnn, const torch::Tensor& x,
                                                     const torch::Tensor& lengths, const Pass& f32, const Pass&) {
    // The thread's autocast setting is as it was.
    EXPECT_FALSE(at::autocast::is_cpu_enabled());
    EXPECT_TRUE(torch::equal(forward_backward(rnn, x, lengths, MatmulPrecision::kFloat32).output, f32.output));
  });
}

// ---------------------------------------------------------------------------
// int8: dynamic quantization (inference only)

/// The int8 product nn/gemm.h documents, from the formula: a per tensor,
/// b per column, integer sums (exact in float64), scaled.
torch::Tensor int8_reference(const torch::Tensor& a, const torch::Tensor& b) {
  const float sa = std::max(a.abs().max().item<float>() / 127, 0.0f);
  const float scale_a = sa > 0 ? sa : 1.0f;
  const auto qa = (a * (1 / scale_a)).round().clamp(-127, 127);
  const auto amax = b.abs().amax(0);
  const auto sb = torch::where(amax > 0, amax / 127, torch::ones_like(amax));
  const auto qb = (b * sb.reciprocal()).round().clamp(-127, 127);
  const auto sums = torch::mm(qa.to(torch::kDouble), qb.to(torch::kDouble));
  return sums * (sb * scale_a).to(torch::kDouble);
}

TEST(Precision, Int8ProductsEqualScaledIntegerSums) {
  if (!cpu_supports_int8()) GTEST_SKIP() << "this CPU has no int8 kernels";
  torch::manual_seed(21);
  MatmulPrecisionGuard int8(MatmulPrecision::kInt8);
  torch::NoGradGuard no_grad;
  for_each_product([](const ProductCase& c) {
    auto want = int8_reference(c.a, c.b) + c.bias.to(torch::kDouble);
    if (c.beta == 1) want += c.before.to(torch::kDouble);
    // One float32 rounding of the scaled sum, one of the additions.
    EXPECT_LT(max_diff(c.out, want), 1e-5 * want.abs().max().item<double>()) << c.name;
    // ...and not the float32 product: int8 rounding shows, about 1%.
    EXPECT_GT(max_diff(c.out, c.exact()), 1e-4) << c.name << ": computed in float32";
    EXPECT_LT(relative_error(c.out, c.exact()), 2e-2) << c.name;
  });
  // A PackedMatrix built for int8 products (which read the cached int8
  // copy of b as it lies), reused.
  const auto w = torch::randn({1040, 65});
  const PackedMatrix packed(w.t(), 32, 8);
  for (int round = 0; round < 3; ++round) {
    const auto x = torch::randn({32, 65});
    auto out = torch::empty({32, 1040});
    packed.gemm_out(out, x);
    EXPECT_LT(max_diff(out, int8_reference(x, w.t())), 1e-5 * out.abs().max().item<double>());
  }
  // Zeros quantize to zeros (a zero scale would divide by zero).
  auto zero_out = torch::ones({3, 4});
  gemm_out(zero_out, torch::zeros({3, 5}), torch::zeros({5, 4}));
  EXPECT_TRUE(torch::equal(zero_out, torch::zeros({3, 4})));
  // float64 products are never reduced.
  const auto ad = torch::randn({4, 9}, torch::kDouble), bd = torch::randn({9, 3}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(gemm(ad, bd), torch::mm(ad, bd), 1e-12, 1e-12));
}

TEST(Precision, FewRowProductsSplitOverThreadsEqualTheirReferences) {
  // bf16 and int8 products of at most 8 rows and a large b run as one
  // one-thread product per thread on a slice of b's columns (nn/gemm.cpp
  // run_split_by_columns): each slice must land in its own columns of out.
  if (!cpu_supports_bf16() || !cpu_supports_int8()) GTEST_SKIP() << "this CPU lacks bf16 or int8 kernels";
  torch::manual_seed(23);
  torch::NoGradGuard no_grad;
  const int threads = at::get_num_threads();
  torch::set_num_threads(2);
  for (const auto precision : {MatmulPrecision::kBFloat16, MatmulPrecision::kInt8}) {
    MatmulPrecisionGuard guard(precision);
    for (int64_t m : {1, 5, 8}) {
      for (bool transposed : {true, false}) {
        for (double beta : {0.0, 1.0}) {
          const int64_t k = 300, n = 1000;
          const auto a = torch::randn({m, k});
          const auto b = transposed ? torch::randn({n, k}).t() : torch::randn({k, n});
          const auto bias = torch::randn({n});
          auto wide = torch::randn({m, n + 7});
          auto out = wide.narrow(1, 0, n);
          const auto before = out.clone();
          const auto untouched = wide.narrow(1, n, 7).clone();
          gemm_out(out, a, b, beta, bias);
          auto want = (precision == MatmulPrecision::kBFloat16 ? torch::mm(rounded(a), rounded(b))
                                                                : int8_reference(a, b)) +
                      bias.to(torch::kDouble);
          if (beta == 1) want += before.to(torch::kDouble);
          const std::string name = to_string(precision) + " m " + std::to_string(m) + (transposed ? " b^T" : " b") +
                                   " beta " + std::to_string(beta);
          EXPECT_LT(max_diff(out, want), 2e-5 * k) << name;
          EXPECT_TRUE(torch::equal(wide.narrow(1, n, 7), untouched)) << name << ": wrote outside out";
        }
      }
    }
  }
  torch::set_num_threads(threads);
}

TEST(Precision, Bf16LeftOperandsRoundAsLibTorchDoes) {
  // gemm_out rounds a to bfloat16 in its own loop (nn/gemm.cpp
  // rows_to_bf16; LibTorch's conversion costs microseconds a call). A product
  // with the identity gives the rounded values back exactly: they must be
  // LibTorch's, ties to even, small and large operands alike (a thread
  // buffer up to 65,536 elements, a new tensor above).
  if (!cpu_supports_bf16()) GTEST_SKIP() << "this CPU lacks AVX512_BF16";
  torch::manual_seed(29);
  torch::NoGradGuard no_grad;
  MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
  const int64_t k = 64;
  const auto identity = torch::eye(k);
  for (int64_t m : {1, 7, 1030}) {
    auto a = torch::randn({m, k}) * 100;
    // Halfway between two bfloat16 values: 1 + 2^-8 rounds down to 1 (even),
    // 1 + 3 * 2^-8 up to 1 + 2^-6.
    a[0][0] = 1.0f + std::ldexp(1.0f, -8);
    a[0][1] = 1.0f + 3 * std::ldexp(1.0f, -8);
    a[0][2] = -(1.0f + 3 * std::ldexp(1.0f, -8));
    a[0][3] = std::numeric_limits<float>::denorm_min();
    auto out = torch::empty({m, k});
    gemm_out(out, a, identity, 0);
    EXPECT_EQ(out[0][0].item<float>(), 1.0f) << m;
    EXPECT_EQ(out[0][1].item<float>(), 1.0f + std::ldexp(1.0f, -6)) << m;
    EXPECT_TRUE(torch::equal(out, a.to(torch::kBFloat16).to(torch::kFloat))) << m;
  }
  // The largest float overflows to infinity, and NaN stays NaN (each in a
  // row of its own: infinity times the identity's zeros is NaN elsewhere).
  auto a = torch::ones({3, k});
  a[1][3] = std::numeric_limits<float>::max();
  a[2][5] = std::numeric_limits<float>::quiet_NaN();
  auto out = torch::empty({3, k});
  gemm_out(out, a, identity, 0);
  EXPECT_TRUE(torch::equal(out[0], torch::ones({k})));
  EXPECT_EQ(out[1][3].item<float>(), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(out[2][5].item<float>()));
}

TEST(Precision, SymmetricInt8RoundingIsOneDefinitionForRowsAndColumns) {
  torch::manual_seed(23);
  auto t = torch::randn({6, 9});
  t[2].zero_();                 // an all-zero row: scale 1, zeros
  t[4].zero_();                 // a row of max 127/16, so of scale 1/16 exactly,
  t[4][0] = 127.0f / 16;
  t[4][1] = 2.5f / 16;          // where 2.5 rounds half to even, to 2,
  t[4][2] = -3.5f / 16;         // and -3.5 to -4
  const auto rows = quantize_symmetric_int8(t, 1);
  ASSERT_EQ(rows.q.scalar_type(), torch::kChar);
  ASSERT_EQ(rows.q.sizes(), t.sizes());
  ASSERT_EQ(rows.scale.sizes(), torch::IntArrayRef({6}));
  EXPECT_EQ(rows.scale[2].item<float>(), 1.0f);
  EXPECT_TRUE(torch::equal(rows.q[2], torch::zeros({9}, torch::kChar)));
  EXPECT_EQ(rows.scale[4].item<float>(), 1.0f / 16);
  EXPECT_EQ(rows.q[4][1].item<int8_t>(), 2);
  EXPECT_EQ(rows.q[4][2].item<int8_t>(), -4);
  EXPECT_EQ(rows.q.abs().amax(1)[0].item<int8_t>(), 127);  // the largest of a row is +-127
  // Within half a step of the value, everywhere.
  const auto back = rows.q.to(torch::kFloat) * rows.scale.unsqueeze(1);
  EXPECT_TRUE(((back - t).abs() <= rows.scale.unsqueeze(1) / 2 + 1e-7).all().item<bool>());
  // Per column of the transpose is the same rounding, in the transpose's layout.
  const auto columns = quantize_symmetric_int8(t.t(), 0);
  EXPECT_TRUE(torch::equal(columns.q, rows.q.t()));
  EXPECT_TRUE(torch::equal(columns.scale, rows.scale));
  EXPECT_EQ(columns.q.strides(), t.t().strides());
  // A loaded int8 weight (float32 scale · q) rounds to the same integers.
  EXPECT_TRUE(torch::equal(quantize_symmetric_int8(back, 1).q, rows.q));
  // float16 is widened first; anything else is refused.
  EXPECT_EQ(quantize_symmetric_int8(t.to(torch::kHalf), 1).scale.scalar_type(), torch::kFloat);
  EXPECT_THROW(quantize_symmetric_int8(torch::randn({2, 3, 4}), 1), c10::Error);
  EXPECT_THROW(quantize_symmetric_int8(t, 2), c10::Error);
}

TEST(Precision, Int8RefusesProductsThatRecordGradients) {
  if (!cpu_supports_int8()) GTEST_SKIP() << "this CPU has no int8 kernels";
  MatmulPrecisionGuard int8(MatmulPrecision::kInt8);
  const auto w = torch::randn({7, 12}, torch::requires_grad());
  const auto message = testing::error_of([&] { cellstate::linear(torch::randn({3, 12}), w); });
  EXPECT_NE(message.find("int8 products are for inference"), std::string::npos) << message;
  auto rnn = make_recurrent(RecurrentOptions(6, 8));
  const auto rnn_message = testing::error_of([&] { rnn->forward(torch::randn({4, 2, 6})); });
  EXPECT_NE(rnn_message.find("int8 products are for inference"), std::string::npos) << rnn_message;
  torch::NoGradGuard no_grad;  // inference is fine
  EXPECT_EQ(cellstate::linear(torch::randn({3, 12}), w).sizes(), (std::vector<int64_t>{3, 7}));
}

TEST(Precision, RecurrentModulesUnderInt8AgreeWithFloat32) {
  if (!cpu_supports_int8()) GTEST_SKIP() << "this CPU has no int8 kernels";
  torch::NoGradGuard no_grad;
  for (auto impl : {Implementation::kCustom, Implementation::kBuiltin}) {
    for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN}) {
      for (bool bidirectional : {false, true}) {
        SCOPED_TRACE(to_string(impl) + " " + to_string(kind) + (bidirectional ? " bi" : " uni"));
        torch::manual_seed(23);
        auto rnn = make_recurrent(
            RecurrentOptions(24, 32).kind(kind).num_layers(2).bidirectional(bidirectional).impl(impl));
        rnn->eval();
        const auto x = torch::randn({12, 5, 24});
        const auto lengths = torch::tensor({12, 7, 12, 3, 9}, torch::kLong);
        const auto f32 = rnn->forward(x, lengths);
        RecurrentOutput q;
        {
          MatmulPrecisionGuard int8(MatmulPrecision::kInt8);
          q = rnn->forward(x, lengths);
        }
        EXPECT_LT(max_diff(q.output, f32.output), 5e-2);
        EXPECT_LT(relative_error(q.output, f32.output), 2e-2);
        EXPECT_LT(relative_error(q.state.h, f32.state.h), 2e-2);
        EXPECT_GT(max_diff(q.output, f32.output), 0.0) << "int8 products were not used";
        // Padding stays zero: the variable lengths are honoured.
        EXPECT_EQ(q.output.narrow(0, 3, 9).select(1, 3).abs().max().item<float>(), 0.0f);
      }
    }
  }
}

}  // namespace
}  // namespace cellstate
