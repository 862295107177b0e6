// The fused Adam and AdamW steps against LibTorch's, their state (and so
// checkpoints) interchangeable with LibTorch's, and clip_gradient_norm
// against torch::nn::utils::clip_grad_norm_.
#include <gtest/gtest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/torch.h>

#include <sstream>

#include "cellstate/nn/gemm.h"
#include "cellstate/train/optimizers.h"
#include "test_util.h"

namespace cs = cellstate;

namespace {

/// Parameters of several shapes (one of them large enough to be split
/// between threads) and a gradient for each step, the same for every run.
struct Problem {
  std::vector<torch::Tensor> params;
  explicit Problem(int64_t seed) {
    torch::manual_seed(seed);
    for (const auto& shape : std::vector<std::vector<int64_t>>{{300, 257}, {7}, {40, 3}, {1}})
      params.push_back(torch::randn(shape).requires_grad_(true));
  }
  void gradients(int64_t step) {
    torch::manual_seed(1000 + step);
    for (auto& p : params) p.mutable_grad() = torch::randn_like(p) * (step % 3 == 0 ? 1e-4 : 1.0);
    params[2].mutable_grad() = torch::Tensor();  // a parameter without a gradient this step
    if (step % 2) params[2].mutable_grad() = torch::randn_like(params[2]);
  }
};

template <class Fused, class Reference, class Options>
void expect_same_steps(const Options& options, const char* what) {
  Problem a(1), b(1);
  Fused fused(a.params, options);
  Reference reference(b.params, options);
  for (int64_t step = 0; step < 25; ++step) {
    a.gradients(step);
    b.gradients(step);
    fused.step();
    reference.step();
    for (size_t i = 0; i < a.params.size(); ++i)
      ASSERT_LT(cellstate::testing::max_abs_diff(a.params[i], b.params[i]), 1e-5)  // rounding, |p| up to 4
          << what << ": parameter " << i << " after step " << step + 1;
  }
}

}  // namespace

TEST(FusedAdam, StepsEqualLibTorchsAdamAndAdamW) {
  expect_same_steps<cs::FusedAdam, torch::optim::Adam>(torch::optim::AdamOptions(1e-2), "adam");
  expect_same_steps<cs::FusedAdam, torch::optim::Adam>(torch::optim::AdamOptions(3e-3).weight_decay(0.1).eps(1e-6),
                                                       "adam with L2 weight decay");
  expect_same_steps<cs::FusedAdamW, torch::optim::AdamW>(torch::optim::AdamWOptions(1e-2).weight_decay(0.05),
                                                         "adamw");
  // amsgrad and float64 parameters take LibTorch's own step.
  expect_same_steps<cs::FusedAdam, torch::optim::Adam>(torch::optim::AdamOptions(1e-2).amsgrad(true), "amsgrad");
}

TEST(FusedAdam, BumpsTheVersionsSoCachedWeightCopiesRefresh) {
  // A step writes through raw pointers; caches keyed by the version counter
  // (the bfloat16 copies of the weights) must see the change.
  Problem a(5);
  cs::FusedAdam fused(a.params, torch::optim::AdamOptions(1e-2));
  a.gradients(1);
  std::vector<int64_t> before;
  for (const auto& p : a.params) before.push_back(p._version());
  fused.step();
  for (size_t i = 0; i < a.params.size(); ++i)
    if (a.params[i].grad().defined()) EXPECT_GT(a.params[i]._version(), before[i]) << "parameter " << i;
  // End to end: a bfloat16 product of a weight sees the fused step's update.
  if (cs::cpu_supports_bf16()) {
    cs::MatmulPrecisionGuard bf16(cs::MatmulPrecision::kBFloat16);
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({4, 257});
    const auto& w = a.params[0];  // [300, 257]
    const auto y0 = cs::linear(x, w, {});
    a.gradients(2);
    fused.step();
    const auto y1 = cs::linear(x, w, {});
    EXPECT_GT(cellstate::testing::max_abs_diff(y0, y1), 1e-3);
    // The product of the updated weight rounded to bfloat16, as computed afresh.
    const auto rounded = [](const torch::Tensor& t) { return t.to(torch::kBFloat16).to(torch::kFloat); };
    EXPECT_LT(cellstate::testing::max_abs_diff(y1, torch::matmul(rounded(x), rounded(w).t())), 1e-2);
  }
}

TEST(FusedAdam, StateIsLibTorchsSoCheckpointsLoadEitherWay) {
  Problem a(2), b(2);
  cs::FusedAdam fused(a.params, torch::optim::AdamOptions(1e-2));
  for (int64_t step = 0; step < 5; ++step) a.gradients(step), b.gradients(step), fused.step();
  // The fused optimiser's state into LibTorch's Adam, and on from there in step.
  std::stringstream saved;
  {
    torch::serialize::OutputArchive archive;
    fused.save(archive);
    archive.save_to(saved);
  }
  for (size_t i = 0; i < a.params.size(); ++i) {
    torch::NoGradGuard g;
    b.params[i].copy_(a.params[i]);
  }
  torch::optim::Adam reference(b.params, torch::optim::AdamOptions(1e-2));
  {
    torch::serialize::InputArchive archive;
    archive.load_from(saved);
    reference.load(archive);
  }
  for (int64_t step = 5; step < 10; ++step) {
    a.gradients(step);
    b.gradients(step);
    fused.step();
    reference.step();
  }
  for (size_t i = 0; i < a.params.size(); ++i)
    EXPECT_LT(cellstate::testing::max_abs_diff(a.params[i], b.params[i]), 2e-6) << "parameter " << i;
}

TEST(ClipGradientNorm, EqualsLibTorchsClipGradNorm) {
  for (const double max_norm : {1e-3, 5.0, 1e6}) {
    Problem a(3), b(3);
    a.gradients(1);
    b.gradients(1);
    const double mine = cs::clip_gradient_norm(a.params, max_norm);
    const double theirs = torch::nn::utils::clip_grad_norm_(b.params, max_norm);
    EXPECT_NEAR(mine, theirs, 1e-5 * theirs) << "max_norm " << max_norm;
    for (size_t i = 0; i < a.params.size(); ++i)
      EXPECT_LT(cellstate::testing::max_abs_diff(a.params[i].grad(), b.params[i].grad()), 1e-6)
          << "max_norm " << max_norm << " parameter " << i;
  }
  Problem c(4);
  EXPECT_THROW(cs::clip_gradient_norm(c.params, 0.0), c10::Error);
}
