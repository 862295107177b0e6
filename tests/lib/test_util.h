#pragma once
// Helpers shared by the tests.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace cellstate::testing {

/// Largest absolute difference, or +inf when shapes or definedness differ.
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.defined() != b.defined()) return std::numeric_limits<double>::infinity();
  if (!a.defined()) return 0.0;
  if (a.sizes() != b.sizes()) return std::numeric_limits<double>::infinity();
  if (a.numel() == 0) return 0.0;
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

/// Copies every parameter of `from` into the parameter of the same name of `to`.
inline void copy_parameters(torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto dst = to.named_parameters();
  for (const auto& p : from.named_parameters()) {
    auto* target = dst.find(p.key());
    ASSERT_NE(target, nullptr) << "no parameter named " << p.key();
    ASSERT_EQ(target->sizes(), p.value().sizes()) << p.key();
    target->copy_(p.value());
  }
  ASSERT_EQ(dst.size(), from.named_parameters().size());
}

/// Checks `grads` (the analytic gradients of `loss()` with respect to
/// `inputs`, float64 tensors) against central finite differences, element
/// by element, within `tolerance`; returns how many gradient elements are
/// exactly zero.
template <typename Loss>
int64_t expect_gradients_match_finite_differences(Loss&& loss, const std::vector<torch::Tensor>& inputs,
                                                  const std::vector<torch::Tensor>& grads, double tolerance,
                                                  const std::string& what) {
  torch::NoGradGuard no_grad;
  const double eps = 1e-6;
  int64_t zeros = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    auto flat = inputs[k].view(-1);
    auto g = grads[k].view(-1);
    for (int64_t e = 0; e < flat.numel(); ++e) {
      const double v = flat[e].item<double>();
      flat[e] = v + eps;
      const double up = loss().template item<double>();
      flat[e] = v - eps;
      const double down = loss().template item<double>();
      flat[e] = v;
      EXPECT_NEAR(g[e].item<double>(), (up - down) / (2 * eps), tolerance)
          << what << ": input " << k << " element " << e;
      zeros += g[e].item<double>() == 0.0;
    }
  }
  return zeros;
}

/// Runs `f` and returns the message of the c10::Error it throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}


/// Path of a fixture in tests/data.
inline std::string data_path(const std::string& name) {
  return std::string(CELLSTATE_TEST_DATA) + "/" + name;
}

/// Runs `f` and returns what() of the std::exception it throws ("" if none).
template <typename F>
std::string exception_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace cellstate::testing
