// The fused label-smoothed cross-entropy against LibTorch's cross_entropy
// (values and gradients), finite differences in float64, and its checks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cellstate/nn/loss.h"
#include "test_util.h"

namespace cellstate {
namespace {

namespace F = torch::nn::functional;

TEST(Loss, SmoothedCrossEntropyIsLibTorchsWithItsGradient) {
  torch::manual_seed(21);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (double smoothing : {0.0, 0.1, 0.5}) {
      for (int64_t V : {3, 1000, 8000}) {
        SCOPED_TRACE(std::string(c10::toString(dtype)) + " smoothing " + std::to_string(smoothing) + " V " +
                     std::to_string(V));
        // Large logits too: the softmax must not overflow.
        const auto z0 = (torch::randn({37, V}, dtype) * 8).transpose(0, 1).contiguous().transpose(0, 1);
        const auto y = torch::randint(V, {37}, torch::kInt64);
        const auto g = torch::tensor(1.7, dtype);
        // The reference: LibTorch's in float64 (its float32 gradient is
        // further from it than this one, ~5e-7 against ~3e-8 at V = 8000).
        const auto mine = z0.clone().requires_grad_(), ref = z0.to(torch::kDouble).requires_grad_();
        const auto a = smoothed_cross_entropy(mine, y, smoothing);
        const auto b = F::cross_entropy(ref, y, F::CrossEntropyFuncOptions().label_smoothing(smoothing));
        (a * g).backward();
        (b * g.to(torch::kDouble)).backward();
        const double tol = dtype == torch::kDouble ? 1e-12 : 2e-6;
        EXPECT_NEAR(a.item<double>(), b.item<double>(), tol * std::max(1.0, std::abs(b.item<double>())));
        EXPECT_LT(testing::max_abs_diff(mine.grad().to(torch::kDouble), ref.grad()),
                  dtype == torch::kDouble ? 1e-14 : 1e-7);
      }
    }
  }
  // float64 against finite differences.
  const auto z = torch::randn({4, 6}, torch::kDouble).requires_grad_();
  const auto y = torch::tensor({0, 5, 2, 2}, torch::kInt64);
  auto loss = [&] { return smoothed_cross_entropy(z, y, 0.2); };
  loss().backward();
  testing::expect_gradients_match_finite_differences(loss, {z}, {z.grad()}, 1e-7, "smoothed_cross_entropy");
}

TEST(Loss, SmoothedCrossEntropyRefusesBadInputs) {
  const auto z = torch::randn({3, 5});
  auto msg = testing::error_of([&] { smoothed_cross_entropy(z, torch::tensor({0, 1, 5}, torch::kInt64)); });
  EXPECT_NE(msg.find("expected classes in [0, 5), got 5"), std::string::npos) << msg;
  msg = testing::error_of([&] { smoothed_cross_entropy(z, torch::tensor({0, -1, 2}, torch::kInt64)); });
  EXPECT_NE(msg.find("got -1"), std::string::npos) << msg;
  msg = testing::error_of([&] { smoothed_cross_entropy(z, torch::tensor({0, 1}, torch::kInt64)); });
  EXPECT_NE(msg.find("expected int64 classes [3], got Long [2]"), std::string::npos) << msg;
  msg = testing::error_of([&] { smoothed_cross_entropy(z, torch::tensor({0, 1, 2}, torch::kInt64), 1.0); });
  EXPECT_NE(msg.find("smoothing must be in [0, 1), got 1"), std::string::npos) << msg;
  msg = testing::error_of([&] { smoothed_cross_entropy(z.view(-1), torch::tensor({0}, torch::kInt64)); });
  EXPECT_NE(msg.find("expected float logits [N, V], got Float [15]"), std::string::npos) << msg;
}

}  // namespace
}  // namespace cellstate
