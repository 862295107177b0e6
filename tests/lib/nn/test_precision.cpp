// Reduced precision of the products (nn/gemm.h MatmulPrecision): bfloat16
// operands with float32 sums equal the same products computed exactly from
// the rounded operands, the recurrent modules' forward and gradients under
// bf16 agree with float32 within bfloat16's rounding, and a CPU without
// AVX512_BF16 refuses bf16 instead of emulating it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

#include "cellstate/nn/gemm.h"
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
  EXPECT_EQ(to_string(MatmulPrecision::kBFloat16), "bf16");
  try {
    parse_matmul_precision("fp8");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("fp32 or bf16, got 'fp8'"), std::string::npos) << e.what();
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

TEST(Precision, Bf16ProductsEqualExactProductsOfRoundedOperands) {
  if (!cpu_supports_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  torch::manual_seed(11);
  MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);
  struct Shape {
    int64_t m, k, n;
  };
  for (const auto sh : {Shape{1, 70, 5}, Shape{32, 65, 260}, Shape{113, 40, 3}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (double beta : {0.0, 1.0}) {
          const auto a = ta ? torch::randn({sh.k, sh.m}).t() : torch::randn({sh.m, sh.k});
          const auto b = tb ? torch::randn({sh.n, sh.k}).t() : torch::randn({sh.k, sh.n});
          const auto bias = torch::randn({sh.n});
          auto out = torch::randn({sh.m, sh.n});
          const auto before = out.clone();
          gemm_out(out, a, b, beta, bias);
          auto want = torch::mm(rounded(a), rounded(b)) + bias.to(torch::kDouble);
          if (beta == 1) want += before.to(torch::kDouble);
          // float32 sums of k exact products: a few ulps of sqrt(k)-sized sums.
          EXPECT_LT(max_diff(out, want), 2e-5 * sh.k) << sh.m << "x" << sh.k << "x" << sh.n << " ta " << ta << " tb " << tb;
          // ...and not the float32 product: bfloat16 rounding shows.
          auto exact = torch::mm(a.to(torch::kDouble), b.to(torch::kDouble)) + bias.to(torch::kDouble);
          if (beta == 1) exact += before.to(torch::kDouble);
          EXPECT_GT(max_diff(out, exact), 1e-3) << "computed in float32";
        }
      }
    }
  }
  // A matrix packed for bf16 products, and float64 (never reduced).
  const auto w = torch::randn({260, 65});
  const PackedMatrix packed(w.t(), 32, 8);
  const auto x = torch::randn({32, 65});
  auto out = torch::empty({32, 260});
  packed.gemm_out(out, x);
  EXPECT_LT(max_diff(out, torch::mm(rounded(x), rounded(w).t())), 2e-5 * 65);
  {
    MatmulPrecisionGuard fp32(MatmulPrecision::kFloat32);  // packed as bf16, used at fp32: b as it lies
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
  }
  const auto ad = torch::randn({4, 9}, torch::kDouble), bd = torch::randn({9, 3}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(gemm(ad, bd), torch::mm(ad, bd), 1e-12, 1e-12));
}

TEST(Precision, LinearUnderAutogradTakesGemmsBackward) {
  if (!cpu_supports_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  torch::manual_seed(12);
  MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);  // float64 products stay exact under it
  const auto x = torch::randn({3, 4, 10}, torch::kDouble).requires_grad_();
  const auto w = torch::randn({6, 10}, torch::kDouble).requires_grad_();
  const auto bias = torch::randn({6}, torch::kDouble).requires_grad_();
  const auto weights = torch::linspace(-1, 1, 6, torch::kDouble);
  auto loss = [&] { return (linear(x, w, bias) * weights).sum(); };
  loss().backward();
  testing::expect_gradients_match_finite_differences(loss, {x, w, bias}, {x.grad(), w.grad(), bias.grad()}, 1e-6,
                                                     "linear");
  // float32 values in bf16 products against LibTorch's float32 linear, without a bias too.
  for (bool with_bias : {true, false}) {
    const auto xf = torch::randn({5, 7, 16}).requires_grad_();
    const auto wf = torch::randn({9, 16}).requires_grad_();
    const auto bf = with_bias ? torch::randn({9}).requires_grad_() : torch::Tensor();
    const auto g = torch::randn({5, 7, 9});
    linear(xf, wf, bf).backward(g);
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

TEST(Precision, RecurrentModulesUnderBf16AgreeWithFloat32) {
  if (!cpu_supports_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN}) {
    for (bool bidirectional : {false, true}) {
      SCOPED_TRACE(std::to_string(static_cast<int>(kind)) + (bidirectional ? " bi" : " uni"));
      torch::manual_seed(13);
      CustomRecurrent rnn(RecurrentOptions(24, 32).kind(kind).num_layers(2).bidirectional(bidirectional));
      const auto x = torch::randn({12, 5, 24});
      const auto lengths = torch::tensor({12, 7, 12, 3, 9}, torch::kLong);
      auto run = [&](MatmulPrecision precision) {
        MatmulPrecisionGuard guard(precision);
        rnn->zero_grad();
        const auto xg = x.clone().requires_grad_();
        auto out = rnn->forward(xg, lengths);
        (out.output * torch::linspace(-1, 1, out.output.size(-1))).sum().backward();
        std::vector<torch::Tensor> grads{xg.grad()};
        for (const auto& p : rnn->parameters()) grads.push_back(p.grad().clone());
        return std::make_pair(out.output.detach(), grads);
      };
      const auto [y32, g32] = run(MatmulPrecision::kFloat32);
      const auto [y16, g16] = run(MatmulPrecision::kBFloat16);
      EXPECT_LT(max_diff(y16, y32), 3e-2);
      EXPECT_LT(relative_error(y16, y32), 1e-2);
      EXPECT_GT(max_diff(y16, y32), 0.0) << "bf16 products were not used";
      for (size_t i = 0; i < g32.size(); ++i) EXPECT_LT(relative_error(g16[i], g32[i]), 3e-2) << "gradient " << i;
      // Inference (no autograd) and the in-place step take the same products.
      torch::NoGradGuard no_grad;
      MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
      EXPECT_LT(max_diff(rnn->forward(x, lengths).output, y16), 1e-5);
    }
  }
}

}  // namespace
}  // namespace cellstate
