#pragma once
// Weights read at every step of a loop that records gradients: a decoder's
// cells and attention layer under teacher forcing, T steps a batch.
//
// Step t's product y_t = x_t · wᵀ (+ b) contributes a term to the weights'
// gradients:
//   ∂L/∂w = Σ_t dy_tᵀ x_t        ∂L/∂b = Σ_t Σ_rows dy_t      (dy_t = ∂L/∂y_t)
// Autograd takes each term as a tensor of w's size and sums the T of them
// one out-of-place addition at a time (LibTorch 1.13 never adds in place):
// in translate's training, 12 MB of float32 formed, allocated and added
// per decoder step for its cell's and attention layer's weights.
//
// StepWeights passes weights on through one autograd node. The products
// that read a weight so passed (cellstate::linear; the recurrences of
// nn/rnn.h and nn/cells.h, through their one autograd function) leave
// their (dy_t, x_t) with that node instead of a gradient, and the node,
// which autograd reaches after every step's backward, forms each sum as
// one product of the stacked rows, at the thread's precision (nn/gemm.h):
//   ∂L/∂w = [dy_1; …; dy_T]ᵀ · [x_1; …; x_T]     ∂L/∂b = Σ_rows [dy_1; …; dy_T]
// (plus any gradient the passed weight receives from other uses). The
// values are the same sums, added in another order.
//
// Each backward pass through the node consumes what its steps left; a step
// leaves nothing in a pass that does not reach the node
// (torch::autograd::grad with respect to other tensors only). The passed
// weights themselves are no place to ask for a gradient: what autograd
// hands them lacks the steps' terms.

#include <ATen/core/ivalue.h>
#include <torch/types.h>

#include <vector>

namespace cellstate {

class StepWeights {
 public:
  StepWeights() = default;
  /// Passes on those of `weights` that record gradients; the others (and
  /// all of them when gradients are not recorded) are the weights themselves.
  explicit StepWeights(const std::vector<torch::Tensor>& weights);

  /// The i-th weight as the steps are to read it.
  const torch::Tensor& operator[](size_t i) const { return passed_.at(i); }
  size_t size() const { return passed_.size(); }

 private:
  std::vector<torch::Tensor> passed_;
};

namespace detail {

/// Where a product's backward is to leave the gradient terms of w: w's
/// place in its StepWeights node, or None when w was not passed through
/// one. A product asks in its forward and keeps the answer in its autograd
/// context (saved_data holds IValues).
c10::IValue gradient_terms_of(const torch::Tensor& w);

/// Leaves the term dyᵀ · x (x undefined: Σ_rows dy, a bias's) at `terms`
/// (gradient_terms_of's answer); false, leaving nothing, when that is None
/// and the caller returns the gradient itself. dy [N, rows of w] and x
/// [N, columns of w] are kept, not copied.
bool leave_gradient_term(const c10::IValue& terms, const torch::Tensor& dy, const torch::Tensor& x = {});

}  // namespace detail
}  // namespace cellstate
