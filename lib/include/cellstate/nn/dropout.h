#pragma once
// The dropout variants of AWD-LSTM (Merity, Keskar & Socher 2017,
// "Regularizing and Optimizing LSTM Language Models"), as functions on
// tensors. Each is the identity when p is 0 and scales what it keeps by
// 1/(1 − p), so nothing changes at evaluation time.
//
//   drop_connect(W, p)      DropConnect (Wan et al. 2013) on a weight matrix:
//                           W ⊙ M / (1 − p), M ~ Bernoulli(1 − p) elementwise,
//                           one mask per call (per forward pass of a layer).
//                           Autograd carries the mask into dW.
//   locked_dropout(x, p)    variational dropout (Gal & Ghahramani 2016):
//                           x [T, B, F] ⊙ M / (1 − p) with one mask
//                           M [1, B, F] per sequence, shared over time.
//   vocabulary_dropout(E, p) embedding dropout: whole rows of an embedding
//                           matrix E [V, D] are zeroed, so a dropped token
//                           disappears from every position of the batch.

#include <torch/torch.h>

namespace cellstate {

/// W ⊙ Bernoulli(1 − p) / (1 − p), elementwise; W itself when p == 0.
torch::Tensor drop_connect(const torch::Tensor& weight, double p);

/// x [T, B, ...] times one Bernoulli(1 − p) / (1 − p) mask [1, B, ...] shared
/// by every step; x itself when p == 0.
torch::Tensor locked_dropout(const torch::Tensor& x, double p);

/// Locked dropout on the rows of a packed sequence (PyTorch's layout: the
/// rows of step t are sequences 0 .. batch_sizes[t] − 1, sorted longest
/// first): data [N, F] with one mask [B, F] per sequence.
torch::Tensor locked_dropout_packed(const torch::Tensor& data, const torch::Tensor& batch_sizes, double p);

/// E [V, D] with each row kept with probability 1 − p and scaled by
/// 1 / (1 − p); E itself when p == 0.
torch::Tensor vocabulary_dropout(const torch::Tensor& embedding, double p);

}  // namespace cellstate
