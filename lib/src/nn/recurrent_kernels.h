#pragma once
// Fused recurrent kernels (internal): one direction of one layer at a time.

#include <torch/torch.h>

#include <vector>

#include "cellstate/nn/rnn.h"

namespace cellstate::detail {

/// The parameters of one direction of one layer (biases may be undefined).
struct LayerParams {
  torch::Tensor w_ih, w_hh, b_ih, b_hh;
};

/// What one direction of one layer computes.
struct LayerResult {
  torch::Tensor y;    ///< [T, B, H], zero where a sequence is over
  torch::Tensor h_n;  ///< [B, H]
  torch::Tensor c_n;  ///< [B, H], LSTM only
};

/// Runs one direction of one layer over x [T, B, I] (contiguous). h0 (and c0
/// for LSTM) are [B, H]. When batch_sizes is not empty, the batch is sorted by
/// length, longest first, and batch_sizes[t] sequences are active at step t
/// (PyTorch's packed layout). Under autograd (grad mode on and an input that
/// requires grad) this goes through a custom autograd function with a
/// hand-written backward; otherwise nothing is saved. `y_into`, only without
/// autograd: a [T, B, H] view with unit-stride rows (one direction's half of
/// a bidirectional layer's [T, B, 2H] output) that receives y, zeros where a
/// sequence is over included (then the result's y), saving the copy a
/// concatenation of the directions would make.
LayerResult run_layer(RecurrentKind kind, bool reverse, const torch::Tensor& x,
                      const torch::Tensor& h0, const torch::Tensor& c0, const LayerParams& params,
                      const std::vector<int64_t>& batch_sizes, const torch::Tensor& y_into = {});

/// One time step of one layer without autograd: x [B, I]; h (and c) [B, H]
/// are updated in place. `gates` ([B, G*H]) and, for the GRU, `gh` ([B, 3H])
/// are workspaces the caller keeps (resized here when too small).
void step_layer(RecurrentKind kind, const torch::Tensor& x, torch::Tensor& h, torch::Tensor& c,
                const LayerParams& params, torch::Tensor& gates, torch::Tensor& gh);

/// The same step when the input projection is already known:
/// input_gates [B, G*H] = x · W_ihᵀ + b_ih (G = 4 LSTM, 3 GRU, 1 RNN).
void step_layer_projected(RecurrentKind kind, const torch::Tensor& input_gates, torch::Tensor& h,
                          torch::Tensor& c, const LayerParams& params, torch::Tensor& gates,
                          torch::Tensor& gh);

}  // namespace cellstate::detail
