#include "cellstate/nn/step_weights.h"

#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "cellstate/nn/gemm.h"

namespace cellstate {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// What the steps' backward left for one StepWeights node: per weight, the
/// (dy, x) of its gradient's terms (x undefined for a bias's row sums).
struct Terms {
  std::mutex mutex;
  std::vector<std::vector<std::pair<torch::Tensor, torch::Tensor>>> of_weight;
};

/// A weight's place in a node's Terms, as an IValue (a capsule).
struct TermsSlot : torch::CustomClassHolder {
  TermsSlot(std::shared_ptr<Terms> t, size_t i) : terms(std::move(t)), index(i) {}
  std::shared_ptr<Terms> terms;
  size_t index;
};

/// Σ over the terms: [dy_1; …]ᵀ · [x_1; …], or Σ_rows [dy_1; …] for a bias.
torch::Tensor sum_of_terms(const std::vector<std::pair<torch::Tensor, torch::Tensor>>& terms) {
  std::vector<torch::Tensor> dy, x;
  for (const auto& [d, xi] : terms) {
    dy.push_back(d);
    if (xi.defined()) x.push_back(xi);
  }
  TORCH_CHECK(x.empty() || x.size() == dy.size(), "StepWeights: a weight read both as a matrix and as a bias");
  const auto dys = dy.size() == 1 ? dy[0] : torch::cat(dy);
  if (x.empty()) return dys.sum(0);
  return gemm(dys.t(), x.size() == 1 ? x[0] : torch::cat(x));
}

/// The weights, passed on; its backward forms their gradients from the terms the steps left.
class PassStepWeights : public torch::autograd::Function<PassStepWeights> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList weights) {
    ctx->set_materialize_grads(false);  // the steps pass on no gradient of their own
    return weights.vec();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto slot = ctx->saved_data["terms"].toCapsule();
    auto& terms = *static_cast<TermsSlot*>(slot.get())->terms;
    std::lock_guard<std::mutex> lock(terms.mutex);
    for (size_t i = 0; i < grads.size() && i < terms.of_weight.size(); ++i) {
      auto& left = terms.of_weight[i];
      if (left.empty()) continue;
      auto sum = sum_of_terms(left);
      grads[i] = grads[i].defined() ? sum.add_(grads[i]) : sum;
      left.clear();
    }
    return grads;
  }
};

}  // namespace

StepWeights::StepWeights(const std::vector<torch::Tensor>& weights) {
  bool records = false;
  for (const auto& w : weights) records = records || (w.defined() && w.requires_grad());
  if (!records || !torch::GradMode::is_enabled()) {
    passed_ = weights;
    return;
  }
  // Those that record gradients are passed (a frozen weight's products
  // would otherwise leave terms summed for nothing).
  variable_list recorded;
  for (const auto& w : weights)
    if (w.defined() && w.requires_grad()) recorded.push_back(w);
  auto terms = std::make_shared<Terms>();
  terms->of_weight.resize(recorded.size());
  const auto out = PassStepWeights::apply(at::TensorList(recorded));
  // The node's terms, reached from its outputs' grad_fn (gradient_terms_of).
  auto* node = dynamic_cast<torch::autograd::CppNode<PassStepWeights>*>(out.at(0).grad_fn().get());
  TORCH_CHECK(node != nullptr, "StepWeights: the passed weights have no node of their own");
  node->ctx_.saved_data["terms"] = c10::IValue::make_capsule(c10::make_intrusive<TermsSlot>(terms, 0));
  size_t next = 0;
  for (const auto& w : weights) passed_.push_back(w.defined() && w.requires_grad() ? out[next++] : w);
}

namespace detail {

c10::IValue gradient_terms_of(const torch::Tensor& w) {
  if (!w.defined() || !w.requires_grad()) return {};
  auto* node = dynamic_cast<torch::autograd::CppNode<PassStepWeights>*>(w.grad_fn().get());
  if (node == nullptr) return {};
  const auto slot = node->ctx_.saved_data["terms"].toCapsule();
  const auto& terms = static_cast<TermsSlot*>(slot.get())->terms;
  return c10::IValue::make_capsule(c10::make_intrusive<TermsSlot>(terms, w.output_nr()));
}

bool leave_gradient_term(const c10::IValue& terms, const torch::Tensor& dy, const torch::Tensor& x) {
  if (!terms.isCapsule()) return false;
  const auto slot = terms.toCapsule();
  const auto& at = *static_cast<TermsSlot*>(slot.get());
  std::lock_guard<std::mutex> lock(at.terms->mutex);
  at.terms->of_weight.at(at.index).emplace_back(dy, x);
  return true;
}

}  // namespace detail
}  // namespace cellstate
