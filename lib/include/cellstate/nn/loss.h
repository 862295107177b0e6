#pragma once
// Cross-entropy with label smoothing (Szegedy et al. 2016) as one fused
// operation, for the output layers of the language model and the translator
// (thousands of classes, where the loss's passes over [N, V] cost as much as
// a large product). Over rows i of logits z [N, V] with gold classes y [N]:
//
//   q_ij    = (1 − ε) [j = y_i] + ε / V                  (the smoothed target)
//   loss_i  = −Σ_j q_ij log softmax(z_i)_j
//           = −(1 − ε) log p_i,y_i − (ε / V) Σ_j log p_ij
//   ∂loss_i / ∂z_ij = p_ij − q_ij
//
// and the mean over rows is returned (ε = 0: the plain cross-entropy). The
// values are torch::nn::functional::cross_entropy's with label_smoothing(ε);
// the backward is one pass over the saved log-probabilities (exp, minus the
// target) instead of ATen's chain of nll_loss's and the smoothing term's
// backward, their sum and log_softmax's backward.

#include <torch/types.h>

namespace cellstate {

/// Mean label-smoothed cross-entropy of logits [N, V] (float32 or float64)
/// against classes [N] (int64 in [0, V)); smoothing ε in [0, 1). Checks
/// shapes, types and class indices (TORCH_CHECK, expected vs got).
torch::Tensor smoothed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& target, double smoothing = 0.0);

}  // namespace cellstate
