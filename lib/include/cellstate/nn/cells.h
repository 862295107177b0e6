#pragma once
// Single-step recurrent cells, written directly from their equations with
// autograd ops. Parameter names and shapes are those of torch::nn::LSTMCell,
// GRUCell and RNNCell (weight_ih [G*H, I], weight_hh [G*H, H], bias_ih and
// bias_hh [G*H]), so weights interchange with LibTorch's cells.
//
// A step that records no gradients (decoding, evaluation) takes the custom
// recurrences' fused step instead: both products into one gates buffer
// through nn/gemm.h (oneDNN, at the thread's precision), then one pass of
// the nonlinearities and the state update -- the same equations, rounded
// differently than the autograd ops (within float32 rounding). A float32
// LSTM step that records gradients is a one-step custom recurrence
// (nn/rnn.h's kernels and their hand-written backward), one autograd node
// instead of a dozen.

#include <torch/torch.h>

#include <array>
#include <tuple>

#include "cellstate/nn/cloneable.h"
#include "cellstate/nn/step_weights.h"

namespace cellstate {

/// Options of a single recurrent cell.
struct CellOptions {
  CellOptions(int64_t input_size, int64_t hidden_size);
  /// Features of the input x (no default).
  TORCH_ARG(int64_t, input_size);
  /// Features of the hidden state h (no default).
  TORCH_ARG(int64_t, hidden_size);
  /// Whether the cell has b_ih and b_hh (default: true).
  TORCH_ARG(bool, bias) = true;
  /// LSTM only: forget part of b_ih set to this value and of b_hh to 0
  /// (default: unset, uniform like the other biases).
  TORCH_ARG(c10::optional<double>, forget_bias) = c10::nullopt;
};

/// Shared parameters and checks of the three cells; `gates` blocks of H rows.
class CellBaseImpl : public torch::nn::Module {
 public:
  CellBaseImpl(CellOptions options, int64_t gates, const char* name);
  /// Registers weight_ih, weight_hh, bias_ih, bias_hh; U(−1/√H, 1/√H).
  virtual void reset();
  void pretty_print(std::ostream& stream) const override;

  /// The cell's sizes (as LibTorch's modules, a public member).
  CellOptions options;

  torch::Tensor weight_ih, weight_hh, bias_ih, bias_hh;

 protected:
  /// Checks x [B, I] and a state tensor [B, H] (undefined allowed); returns the
  /// state, zeros when undefined.
  torch::Tensor checked_state(const torch::Tensor& x, const torch::Tensor& state,
                              const char* what) const;
  /// W_ih x + b_ih and W_hh h + b_hh, each [B, gates*H] (`weights`: in
  /// place of weight_ih, weight_hh, bias_ih, bias_hh).
  std::pair<torch::Tensor, torch::Tensor> projections(const torch::Tensor& x, const torch::Tensor& h) const;
  std::pair<torch::Tensor, torch::Tensor> projections(const torch::Tensor& x, const torch::Tensor& h,
                                                      const std::array<torch::Tensor, 4>& weights) const;

  int64_t gates_;
  const char* name_;
};

/// LSTM cell:
///   i = σ(W_ii x + b_ii + W_hi h + b_hi)    f = σ(W_if x + b_if + W_hf h + b_hf)
///   g = tanh(W_ig x + b_ig + W_hg h + b_hg) o = σ(W_io x + b_io + W_ho h + b_ho)
///   c' = f ⊙ c + i ⊙ g                      h' = o ⊙ tanh(c')
/// forward(x [B, I], (h, c) each [B, H], undefined = zeros) → (h', c').
class LSTMCellImpl : public CloneableFrom<LSTMCellImpl, CellBaseImpl> {
 public:
  explicit LSTMCellImpl(CellOptions options);
  LSTMCellImpl(int64_t input_size, int64_t hidden_size)
      : LSTMCellImpl(CellOptions(input_size, hidden_size)) {}
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& x, const std::tuple<torch::Tensor, torch::Tensor>& hx = {});
  /// The same step reading `weights` (weight_ih, weight_hh, bias_ih and
  /// bias_hh of this cell passed through nn/step_weights.h's node, as
  /// step_weights() gives them): a loop of steps that records gradients
  /// then has their gradients summed once, after all its steps.
  std::tuple<torch::Tensor, torch::Tensor> forward_with(const torch::Tensor& x,
                                                        const std::tuple<torch::Tensor, torch::Tensor>& hx,
                                                        const StepWeights& weights);
  /// This cell's weights passed through one StepWeights node.
  StepWeights step_weights() const;

 private:
  std::tuple<torch::Tensor, torch::Tensor> step(const torch::Tensor& x,
                                                const std::tuple<torch::Tensor, torch::Tensor>& hx,
                                                const std::array<torch::Tensor, 4>& weights);
};
TORCH_MODULE(LSTMCell);

/// GRU cell:
///   r = σ(W_ir x + b_ir + W_hr h + b_hr)    z = σ(W_iz x + b_iz + W_hz h + b_hz)
///   n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
///   h' = (1 − z) ⊙ n + z ⊙ h
/// forward(x [B, I], h [B, H], undefined = zeros) → h'.
class GRUCellImpl : public CloneableFrom<GRUCellImpl, CellBaseImpl> {
 public:
  explicit GRUCellImpl(CellOptions options);
  GRUCellImpl(int64_t input_size, int64_t hidden_size)
      : GRUCellImpl(CellOptions(input_size, hidden_size)) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& h = {});
};
TORCH_MODULE(GRUCell);

/// Elman RNN cell: h' = tanh(W_ih x + b_ih + W_hh h + b_hh).
/// forward(x [B, I], h [B, H], undefined = zeros) → h'.
class RNNCellImpl : public CloneableFrom<RNNCellImpl, CellBaseImpl> {
 public:
  explicit RNNCellImpl(CellOptions options);
  RNNCellImpl(int64_t input_size, int64_t hidden_size)
      : RNNCellImpl(CellOptions(input_size, hidden_size)) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& h = {});
};
TORCH_MODULE(RNNCell);

}  // namespace cellstate
