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

#include <memory>

namespace cellstate {

/// scores [B, S] from keys [B, S, D] and query [B, D].
torch::Tensor attention_scores(const torch::Tensor& keys, const torch::Tensor& query);

/// context [B, D'] from weights [B, S] and memory [B, S, D'].
torch::Tensor attention_context(const torch::Tensor& weights, const torch::Tensor& memory);

/// The source side of dot-product attention over a whole decode: keys
/// [B, S, D] and memory [B, S, D'], read at every decoder step t by
///
///   scores_t  = attention_scores(keys, q_t)     q_t [B, D]
///   context_t = attention_context(a_t, memory)  a_t [B, S]
///
/// Without gradients these are the two functions above. When gradients are
/// recorded (teacher forcing), torch::bmm's backward would hand autograd
/// every step's gradient of keys and of memory as a tensor as large as the
/// source, [B, S, D], and autograd would sum the T of them one out-of-place
/// addition at a time: in translate's training (batch 64, 15-30 source
/// positions, D = 512) those additions, their allocations and the bmm's
/// one-row products were a fifth of the main thread's time. Here each
/// step's backward forms only the gradients of its own inputs,
///   dq_t[b] = Σ_s g_t[b, s] · keys[b, s]      (g_t = ∂L/∂scores_t)
///   da_t[b, s] = memory[b, s] · dc_t[b]       (dc_t = ∂L/∂context_t)
/// and leaves (g_t, q_t) and (a_t, dc_t), [B, S] and [B, D] each, for one
/// node ahead of all the steps, which autograd reaches after every step's
/// backward and which forms both sums at once, as batched products:
///   ∂L/∂keys[b]   = Σ_t g_t[b]ᵀ q_t[b]  = G[b]ᵀ Q[b]     G [B, T, S], Q [B, T, D]
///   ∂L/∂memory[b] = Σ_t a_t[b]ᵀ dc_t[b] = A[b]ᵀ dC[b]
/// (plus any gradient keys() or memory() receive from other uses). Each
/// backward pass through the node consumes what its steps left; a step
/// leaves nothing in a pass that does not reach the node
/// (torch::autograd::grad with respect to other tensors only).
class AttentionSource {
 public:
  AttentionSource() = default;
  /// keys [B, S, D] and memory [B, S, D'] of the same batch and positions.
  AttentionSource(const torch::Tensor& keys, const torch::Tensor& memory);

  /// scores [B, S] = attention_scores(keys, query) for query [B, D].
  torch::Tensor scores(const torch::Tensor& query) const;
  /// context [B, D'] = attention_context(weights, memory) for weights [B, S].
  torch::Tensor context(const torch::Tensor& weights) const;

  /// The keys and memory as the steps read them (under autograd: outputs of
  /// the node that gathers their gradients).
  const torch::Tensor& keys() const { return keys_; }
  const torch::Tensor& memory() const { return memory_; }

  /// What the steps' backward leaves for the gathering node.
  struct Steps;

 private:
  torch::Tensor keys_, memory_;
  std::shared_ptr<Steps> steps_;  // null: no gradients recorded
};

}  // namespace cellstate
