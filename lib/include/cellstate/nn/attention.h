#pragma once
// The two batched products of dot-product attention at one decoding step,
// for every row b of a batch (B rows, S source positions):
//
//   scores[b, s]  = Σ_d keys[b, s, d] · query[b, d]          keys [B, S, D]
//   context[b, d] = Σ_s weights[b, s] · memory[b, s, d]      memory [B, S, D']
//
// torch::bmm computes them as B products of one row each, and at a beam
// search's sizes (160 rows, 15-30 positions, 256-512 features) its per-row
// overhead made them 0.4-0.7 ms a step each, as much as the decoder's LSTM
// step. Without autograd these run as plain loops over the rows (float32,
// contiguous inputs; otherwise, and whenever gradients are recorded, they
// are torch::bmm).

#include <torch/types.h>

namespace cellstate {

/// scores [B, S] from keys [B, S, D] and query [B, D].
torch::Tensor attention_scores(const torch::Tensor& keys, const torch::Tensor& query);

/// context [B, D'] from weights [B, S] and memory [B, S, D'].
torch::Tensor attention_context(const torch::Tensor& weights, const torch::Tensor& memory);

}  // namespace cellstate
