// nn/gemm.h: oneDNN's products equal LibTorch's for every layout the
// kernels use (plain, transposed, row views), with bias and accumulation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cellstate/nn/gemm.h"

namespace cs = cellstate;

namespace {

torch::Tensor reference(const torch::Tensor& out0, const torch::Tensor& a, const torch::Tensor& b, double beta,
                        const torch::Tensor& bias) {
  auto r = torch::mm(a.to(torch::kDouble), b.to(torch::kDouble));
  if (bias.defined()) r += bias.to(torch::kDouble);
  if (beta == 1) r += out0.to(torch::kDouble);
  return r;
}

}  // namespace

TEST(Gemm, EqualsLibTorchForEveryLayout) {
  torch::manual_seed(3);
  struct Shape {
    int64_t m, k, n;
  };
  for (const auto sh : {Shape{1, 7, 5}, Shape{32, 65, 260}, Shape{113, 40, 3}, Shape{3, 300, 1}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (double beta : {0.0, 1.0}) {
          for (bool with_bias : {false, true}) {
            const auto a = ta ? torch::randn({sh.k, sh.m}).t() : torch::randn({sh.m, sh.k});
            const auto b = tb ? torch::randn({sh.n, sh.k}).t() : torch::randn({sh.k, sh.n});
            const auto bias = with_bias ? torch::randn({sh.n}) : torch::Tensor();
            // out is a row block of a wider buffer, as the kernels' per-step gates are.
            auto wide = torch::randn({sh.m + 2, sh.n + 3});
            auto out = wide.narrow(0, 1, sh.m).narrow(1, 0, sh.n);
            const auto before = out.clone();
            const auto untouched = wide.narrow(1, sh.n, 3).clone();
            cs::gemm_out(out, a, b, beta, bias);
            const auto want = reference(before, a, b, beta, bias);
            EXPECT_LT((out.to(torch::kDouble) - want).abs().max().item<double>(), 1e-3 * std::sqrt(double(sh.k)))
                << sh.m << "x" << sh.k << "x" << sh.n << " ta " << ta << " tb " << tb << " beta " << beta
                << " bias " << with_bias;
            EXPECT_TRUE(torch::equal(wide.narrow(1, sh.n, 3), untouched)) << "wrote outside out";
          }
        }
      }
    }
  }
}

TEST(Gemm, DoubleGoesThroughLibTorchExactly) {
  const auto a = torch::randn({9, 4}, torch::kDouble), b = torch::randn({4, 6}, torch::kDouble);
  const auto bias = torch::randn({6}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(cs::gemm(a, b, bias), torch::addmm(bias, a, b), 1e-12, 1e-12));
}

TEST(Gemm, LinearMatchesFunctionalAndKeepsAutograd) {
  const auto x = torch::randn({2, 3, 8}), w = torch::randn({5, 8}), bias = torch::randn({5});
  const auto want = torch::nn::functional::linear(x, w, bias);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::allclose(cs::linear(x, w, bias), want, 1e-4, 1e-5));
  }
  const auto wg = w.clone().requires_grad_();
  auto y = cs::linear(x, wg, bias);
  y.sum().backward();
  ASSERT_TRUE(wg.grad().defined());
  EXPECT_TRUE(torch::allclose(wg.grad(), x.reshape({6, 8}).sum(0).expand({5, 8}), 1e-4, 1e-4));
}

TEST(Gemm, BadShapesAreErrorsNamingThem) {
  const auto a = torch::randn({3, 4}), b = torch::randn({5, 6});
  try {
    cs::gemm(a, b);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("inner sizes differ"), std::string::npos) << e.what();
  }
  auto out = torch::empty({3, 3});
  EXPECT_THROW(cs::gemm_out(out, a, torch::randn({4, 6})), c10::Error);
  EXPECT_THROW(cs::gemm(a, torch::randn({4, 6}), torch::randn({5})), c10::Error);
  EXPECT_THROW(cs::gemm_out(torch::empty({3, 6}), a, torch::randn({4, 6}), 0.5), c10::Error);
}

TEST(Gemm, EmptyProducts) {
  auto out = torch::full({2, 3}, 7.0f);
  cs::gemm_out(out, torch::empty({2, 0}), torch::empty({0, 3}), 1);
  EXPECT_TRUE(torch::equal(out, torch::full({2, 3}, 7.0f)));
  EXPECT_EQ(cs::gemm(torch::empty({0, 4}), torch::randn({4, 3})).sizes(), (std::vector<int64_t>{0, 3}));
}

TEST(Gemm, PackedMatrixEqualsGemmForAnyRowCount) {
  torch::manual_seed(4);
  const auto w = torch::randn({260, 65});  // [N, K], as a weight is stored
  const cs::PackedMatrix packed(w.t(), 32, 8);
  const auto bias = torch::randn({260});
  for (int64_t rows : {32, 31, 7, 1, 64}) {
    const auto a = torch::randn({rows, 65});
    auto out = torch::randn({rows, 260});
    const auto before = out.clone();
    packed.gemm_out(out, a, 1, bias);
    EXPECT_LT((out - (before + torch::addmm(bias, a, w.t()))).abs().max().item<double>(), 1e-3) << rows;
    packed.gemm_out(out, a);
    EXPECT_LT((out - torch::mm(a, w.t())).abs().max().item<double>(), 1e-3) << rows;
  }
  // float64 (no oneDNN kernel) goes through LibTorch.
  const auto wd = w.to(torch::kDouble);
  const cs::PackedMatrix packed_double(wd, 8, 100);
  auto out = torch::empty({8, 65}, torch::kDouble);
  const auto a = torch::randn({8, 260}, torch::kDouble);
  packed_double.gemm_out(out, a);
  EXPECT_TRUE(torch::allclose(out, torch::mm(a, wd), 1e-12, 1e-12));
}
