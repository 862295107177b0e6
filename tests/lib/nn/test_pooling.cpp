// masked_max_over_time against LibTorch's masked_fill + max (the composition
// it replaces), with and without a recorded gradient, and its checks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cellstate/nn/pooling.h"

namespace cellstate {
namespace {

torch::Tensor reference(const torch::Tensor& h, const torch::Tensor& lengths, double fill) {
  const auto mask = torch::arange(h.size(1)).unsqueeze(0) < lengths.unsqueeze(1);
  return std::get<0>(h.masked_fill(~mask.unsqueeze(2), fill).max(1));
}

TEST(Pooling, MaskedMaxOverTimeIsLibTorchsComposition) {
  torch::manual_seed(5);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (const bool time_major : {false, true}) {
      for (const int64_t F : {1, 7, 16, 256}) {
        SCOPED_TRACE(std::string(c10::toString(dtype)) + (time_major ? " time-major" : " batch-major") + " F " +
                     std::to_string(F));
        const int64_t B = 37, T = 9;
        // Time-major storage seen as [B, T, F]: the layout a batch-first
        // recurrence returns (a transposed view).
        const auto h = time_major ? torch::randn({T, B, F}, dtype).transpose(0, 1) : torch::randn({B, T, F}, dtype);
        auto lengths = torch::randint(1, T + 1, {B}, torch::kInt64);
        lengths[0] = T;
        lengths[1] = 1;
        lengths[2] = 0;  // no valid step: the fill value
        const auto got = masked_max_over_time(h, lengths);
        EXPECT_TRUE(torch::equal(got, reference(h, lengths, -1e9)));
        EXPECT_EQ(got[2].max().item<double>(), static_cast<double>(static_cast<float>(-1e9)));
        // A padded step larger than every valid one is not read.
        auto padded = h.clone();
        padded.select(1, T - 1).index_put_({lengths < T}, 1e6);
        EXPECT_TRUE(torch::equal(masked_max_over_time(padded, lengths), got));
      }
    }
  }
}

TEST(Pooling, MaskedMaxOverTimeKeepsTheGradientAndNaN) {
  torch::manual_seed(6);
  const auto h0 = torch::randn({5, 4, 3});
  const auto lengths = torch::tensor({4, 2, 1, 3, 4}, torch::kInt64);
  const auto h = h0.clone().requires_grad_();
  const auto out = masked_max_over_time(h, lengths);
  out.sum().backward();
  const auto ref_h = h0.clone().requires_grad_();
  reference(ref_h, lengths, -1e9).sum().backward();
  EXPECT_TRUE(torch::equal(out, reference(h0, lengths, -1e9)));
  EXPECT_TRUE(torch::equal(h.grad(), ref_h.grad()));
  // NaN in a valid step comes out, as Tensor::max's does; NaN in padding does not.
  auto with_nan = h0.clone();
  with_nan[1][0][2] = std::nan("");
  with_nan[1][3][1] = std::nan("");
  const auto pooled = masked_max_over_time(with_nan, lengths);
  EXPECT_TRUE(std::isnan(pooled[1][2].item<float>()));
  EXPECT_FALSE(std::isnan(pooled[1][1].item<float>()));
}

TEST(Pooling, MaskedMaxOverTimeChecksItsInputs) {
  const auto h = torch::randn({2, 3, 4});
  EXPECT_THROW(masked_max_over_time(h.select(2, 0), torch::tensor({1, 2}, torch::kInt64)), c10::Error);
  EXPECT_THROW(masked_max_over_time(h.to(torch::kInt32), torch::tensor({1, 2}, torch::kInt64)), c10::Error);
  EXPECT_THROW(masked_max_over_time(h, torch::tensor({1, 2, 3}, torch::kInt64)), c10::Error);
  EXPECT_THROW(masked_max_over_time(h, torch::tensor({1, 2}, torch::kInt32)), c10::Error);
  try {
    masked_max_over_time(h, torch::tensor({1, 4}, torch::kInt64));
    FAIL() << "a length past T was accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("expected lengths in [0, 3], got 4"), std::string::npos)
        << e.what_without_backtrace();
  }
  EXPECT_THROW(masked_max_over_time(torch::randn({2, 0, 4}), torch::tensor({0, 0}, torch::kInt64)), c10::Error);
}

}  // namespace
}  // namespace cellstate
