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
//   dropout(x, p, train)    standard dropout (Srivastava et al. 2014), one
//                           mask element per element of x; Dropout is the
//                           module around it.
//
// Every mask comes from keep_mask(): one 64-bit seed drawn from LibTorch's
// default generator (so torch::manual_seed and --seed decide it), then
// element i's uniform 32 bits are the high half of splitmix64(seed + i·φ)
// (φ = 0x9E3779B97F4A7C15), kept when below ⌊(1 − p)·2³²⌋. The elements are
// independent of each other and of how many threads fill them, so a mask is
// the same at any thread count. LibTorch's bernoulli_(double) draws element
// by element from one locked generator: 13 ns an element here, 3.5 ms for a
// [16, 40, 400] batch, a tenth of a NER training step; the vectorised hash
// fills it in a fraction of that.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/torch.h>

namespace cellstate {

/// A mask of `shape` in `like`'s dtype and device, without autograd: each
/// element 1 / (1 − p) with probability 1 − p, else 0 (see above). p in [0, 1).
torch::Tensor keep_mask(at::IntArrayRef shape, const torch::Tensor& like, double p);

/// x ⊙ keep_mask(x.sizes(), x, p) when `train` and p > 0, else x.
torch::Tensor dropout(const torch::Tensor& x, double p, bool train);

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

struct DropoutOptions {
  /* implicit */ DropoutOptions(double p = 0.5) : p_(p) {}  // NOLINT(google-explicit-constructor)
  /// The probability of zeroing an element, in [0, 1).
  TORCH_ARG(double, p) = 0.5;
};

/// dropout() as a module: acts in training mode only (torch::nn::Dropout's
/// interface, with the masks above).
class DropoutImpl : public torch::nn::Cloneable<DropoutImpl> {
 public:
  explicit DropoutImpl(DropoutOptions options_ = {});
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x);

  DropoutOptions options;
};
TORCH_MODULE(Dropout);

}  // namespace cellstate
