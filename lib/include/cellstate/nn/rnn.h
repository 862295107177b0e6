#pragma once
// Recurrent layers: custom LSTM, GRU and tanh RNN modules that stand beside
// LibTorch's torch::nn::LSTM/GRU/RNN with the same shapes, semantics and
// parameter names, plus a wrapper of the built-in modules behind one interface.
//
// Equations (PyTorch's, gate rows stacked in this order in the weights):
//
//   LSTM (gates i, f, g, o; weight_ih is [4H, I], weight_hh is [4H, H])
//     i  = σ(W_ii x + b_ii + W_hi h + b_hi)
//     f  = σ(W_if x + b_if + W_hf h + b_hf)
//     g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
//     o  = σ(W_io x + b_io + W_ho h + b_ho)
//     c' = f ⊙ c + i ⊙ g
//     h' = o ⊙ tanh(c')
//
//   GRU (gates r, z, n; weight_ih is [3H, I], weight_hh is [3H, H])
//     r  = σ(W_ir x + b_ir + W_hr h + b_hr)
//     z  = σ(W_iz x + b_iz + W_hz h + b_hz)
//     n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
//     h' = (1 − z) ⊙ n + z ⊙ h
//
//   RNN (weight_ih is [H, I], weight_hh is [H, H])
//     h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
//
// Variable-length batches follow PyTorch's packed-sequence semantics: a
// sequence of length L only reads its first L steps, padded steps never
// change its state, the reverse direction starts at its own last real step,
// outputs at padded positions are zero and h_n/c_n hold each sequence's true
// final state.

#include <torch/torch.h>

#include <memory>
#include <string>
#include <tuple>

#include "cellstate/nn/cloneable.h"

namespace cellstate {

/// The recurrence a module computes.
enum class RecurrentKind { kLSTM, kGRU, kRNN };

/// Who computes it: this library's fused kernels, or LibTorch's built-in module.
enum class Implementation { kCustom, kBuiltin };

/// "lstm" | "gru" | "rnn"; throws std::invalid_argument naming the accepted values.
RecurrentKind parse_recurrent_kind(const std::string& name);
/// "custom" | "builtin"; throws std::invalid_argument naming the accepted values.
Implementation parse_implementation(const std::string& name);
std::string to_string(RecurrentKind kind);
std::string to_string(Implementation impl);
/// Number of gate blocks stacked in the weights: 4 (LSTM), 3 (GRU), 1 (RNN).
int64_t gate_count(RecurrentKind kind);

/// Options of a (possibly stacked, bidirectional) recurrent layer.
struct RecurrentOptions {
  RecurrentOptions(int64_t input_size, int64_t hidden_size);

  /// The recurrence (default: LSTM).
  TORCH_ARG(RecurrentKind, kind) = RecurrentKind::kLSTM;
  /// Fused custom kernels or LibTorch's built-in module (default: custom).
  TORCH_ARG(Implementation, impl) = Implementation::kCustom;
  /// Features of each input step (no default).
  TORCH_ARG(int64_t, input_size);
  /// Features of the hidden state of each direction (no default).
  TORCH_ARG(int64_t, hidden_size);
  /// Number of stacked layers (default: 1).
  TORCH_ARG(int64_t, num_layers) = 1;
  /// Whether the layers have b_ih and b_hh (default: true).
  TORCH_ARG(bool, bias) = true;
  /// Input and output as [batch, time, features] instead of [time, batch,
  /// features] (default: false). States are always [layers*dirs, batch, H].
  TORCH_ARG(bool, batch_first) = false;
  /// Dropout probability on the outputs of every layer but the last, in
  /// training mode only (default: 0).
  TORCH_ARG(double, dropout) = 0.0;
  /// Use one dropout mask per sequence between layers, shared by every time
  /// step (variational or "locked" dropout, Gal & Ghahramani 2016) instead of
  /// a fresh mask per step (default: false).
  TORCH_ARG(bool, locked_dropout) = false;
  /// DropConnect on the hidden-to-hidden weights (AWD-LSTM's weight drop,
  /// Merity et al. 2017): in training mode each weight_hh of every layer and
  /// direction is multiplied by its own Bernoulli(1 − p) / (1 − p) mask,
  /// drawn once per forward call and shared by every step; the gradient
  /// reaches weight_hh through the same mask (default: 0, off).
  TORCH_ARG(double, weight_dropout) = 0.0;
  /// Run a second direction over the reversed sequence and concatenate the
  /// two outputs (default: false).
  TORCH_ARG(bool, bidirectional) = false;
  /// LSTM only: initialise the forget-gate part of b_ih to this value and of
  /// b_hh to 0, so that the effective forget bias is the value; 1 is the
  /// common choice (Jozefowicz et al. 2015), larger values help memory over
  /// long spans (default: unset, PyTorch's uniform initialisation).
  TORCH_ARG(c10::optional<double>, forget_bias) = c10::nullopt;
};

/// Recurrent state: h (and c for LSTM), each [layers * directions, batch, H].
/// Undefined tensors mean zeros.
struct RecurrentState {
  torch::Tensor h;
  torch::Tensor c;  ///< LSTM only; undefined for GRU and RNN.
};

/// What every recurrent module returns.
struct RecurrentOutput {
  /// [T, B, directions*H] (or [B, T, directions*H] with batch_first); zero at
  /// padded positions.
  torch::Tensor output;
  /// Final state of each sequence: [layers*directions, B, H].
  RecurrentState state;
};

/// The interface shared by the custom and the built-in implementations.
///
/// forward(input, lengths, state):
///   input   [T, B, I] (or [B, T, I] with batch_first), float or double;
///   lengths optional int64 [B] (CPU), each in [1, T]; undefined = all T;
///   state   optional initial state, each [layers*directions, B, H].
class RecurrentModuleImpl : public torch::nn::Module {
 public:
  explicit RecurrentModuleImpl(RecurrentOptions options);

  virtual RecurrentOutput forward(const torch::Tensor& input,
                                  const torch::Tensor& lengths = {},
                                  const RecurrentState& state = {}) = 0;
  /// Validates the options, registers the parameters and initialises them.
  virtual void reset() = 0;

  int64_t num_directions() const { return options.bidirectional() ? 2 : 1; }
  /// Features of each output step: directions * hidden_size.
  int64_t output_size() const { return num_directions() * options.hidden_size(); }
  /// PyTorch's name of one parameter: "weight_ih", layer 1, reverse →
  /// "weight_ih_l1_reverse".
  static std::string parameter_name(const std::string& base, int64_t layer, bool reverse);

 protected:
  /// Validates options (called by the constructors of subclasses).
  void validate_options() const;
  /// Checks input, lengths and state against the options; returns T and B.
  std::pair<int64_t, int64_t> check_forward_args(const torch::Tensor& input,
                                                 const torch::Tensor& lengths,
                                                 const RecurrentState& state) const;
  /// Checks an initial state for B sequences of type `dtype` (the part of
  /// check_forward_args about the state).
  void check_state_args(int64_t B, torch::ScalarType dtype, const RecurrentState& state) const;
  /// Registers weight_ih_l{k}{_reverse}, … for the layers, in PyTorch's order.
  void register_layer_parameters();
  /// The forward pass through the library's fused kernels (the custom
  /// implementation's; the built-in one's under int8 products, which
  /// LibTorch's recurrences do not have).
  RecurrentOutput forward_with_kernels(const torch::Tensor& input, const torch::Tensor& lengths,
                                       const RecurrentState& state);

 public:
  /// What the module computes (as LibTorch's modules, a public member).
  RecurrentOptions options;
};

/// The custom implementation: fused forward kernels and a hand-written
/// backward through time (one GEMM for the input projection of all steps,
/// one GEMM per step for the recurrence, the gate nonlinearities and state
/// update in one pass over memory; weight gradients as one GEMM each after
/// the loop).
class CustomRecurrentImpl : public CloneableFrom<CustomRecurrentImpl, RecurrentModuleImpl> {
 public:
  explicit CustomRecurrentImpl(RecurrentOptions options);
  CustomRecurrentImpl(int64_t input_size, int64_t hidden_size)
      : CustomRecurrentImpl(RecurrentOptions(input_size, hidden_size)) {}

  /// Registers and initialises the parameters: U(−1/√H, 1/√H) like PyTorch,
  /// and the forget bias if asked.
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  RecurrentOutput forward(const torch::Tensor& input, const torch::Tensor& lengths = {},
                          const RecurrentState& state = {}) override;

  /// One time step of a unidirectional module, for generation and decoding:
  /// input [B, I], state [layers, B, H] each (undefined = zeros); returns the
  /// new state. Runs without autograd.
  RecurrentState step(const torch::Tensor& input, const RecurrentState& state = {});

  /// In-place step: updates `state` (defined, contiguous [layers, B, H]
  /// tensors the caller owns) without allocating: the gate buffers are kept
  /// in the module and reused from token to token. Not for concurrent use of
  /// one module from several threads.
  void step_(const torch::Tensor& input, RecurrentState& state);

  /// The same in-place step with the first layer's input projection given
  /// instead of its input: input_gates [B, G*H] = input · W_ih_l0ᵀ + b_ih_l0
  /// (G = 4 LSTM, 3 GRU, 1 RNN). A caller that knows it already (a
  /// language model memoises it per token, models/language_model.h) skips
  /// the first layer's largest read, W_ih_l0.
  void step_projected_(const torch::Tensor& input_gates, RecurrentState& state);

 private:
  /// Checks the state step_ and step_projected_ update for batch B.
  void check_step_state(int64_t batch, const RecurrentState& state) const;
  torch::Tensor step_gates_, step_gh_;  // step_ workspaces, resized on demand
};
TORCH_MODULE(CustomRecurrent);

/// LibTorch's torch::nn::LSTM/GRU/RNN behind the same interface. Its
/// parameters are registered on this module under PyTorch's names, so one
/// state dict loads into either implementation. The forward pass calls
/// ATen's functional recurrences (torch::lstm, torch::gru, torch::rnn_tanh,
/// the kernels torch::nn's modules call) one layer at a time with the
/// module's weights, so that weight_dropout passes them masked and
/// locked_dropout acts between the layers. Under int8 products (nn/gemm.h,
/// inference only) it runs the custom kernels with its parameters.
class BuiltinRecurrentImpl : public CloneableFrom<BuiltinRecurrentImpl, RecurrentModuleImpl> {
 public:
  explicit BuiltinRecurrentImpl(RecurrentOptions options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  RecurrentOutput forward(const torch::Tensor& input, const torch::Tensor& lengths = {},
                          const RecurrentState& state = {}) override;

 private:
  torch::nn::LSTM lstm_{nullptr};
  torch::nn::GRU gru_{nullptr};
  torch::nn::RNN rnn_{nullptr};
};
TORCH_MODULE(BuiltinRecurrent);

/// Builds the module the options ask for (kind and impl).
std::shared_ptr<RecurrentModuleImpl> make_recurrent(const RecurrentOptions& options);

/// Custom LSTM with torch::nn::LSTM's call shape:
/// forward(input, (h0, c0), lengths) → (output, (h_n, c_n)).
class LSTMImpl : public CloneableFrom<LSTMImpl, CustomRecurrentImpl> {
 public:
  explicit LSTMImpl(RecurrentOptions options);
  LSTMImpl(int64_t input_size, int64_t hidden_size)
      : LSTMImpl(RecurrentOptions(input_size, hidden_size)) {}
  std::tuple<torch::Tensor, std::tuple<torch::Tensor, torch::Tensor>> forward(
      const torch::Tensor& input, const std::tuple<torch::Tensor, torch::Tensor>& hx = {},
      const torch::Tensor& lengths = {});
};
TORCH_MODULE(LSTM);

/// Custom GRU with torch::nn::GRU's call shape: forward(input, h0, lengths) → (output, h_n).
class GRUImpl : public CloneableFrom<GRUImpl, CustomRecurrentImpl> {
 public:
  explicit GRUImpl(RecurrentOptions options);
  GRUImpl(int64_t input_size, int64_t hidden_size)
      : GRUImpl(RecurrentOptions(input_size, hidden_size)) {}
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& input,
                                                   const torch::Tensor& hx = {},
                                                   const torch::Tensor& lengths = {});
};
TORCH_MODULE(GRU);

/// Custom tanh RNN with torch::nn::RNN's call shape: forward(input, h0, lengths) → (output, h_n).
class RNNImpl : public CloneableFrom<RNNImpl, CustomRecurrentImpl> {
 public:
  explicit RNNImpl(RecurrentOptions options);
  RNNImpl(int64_t input_size, int64_t hidden_size)
      : RNNImpl(RecurrentOptions(input_size, hidden_size)) {}
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& input,
                                                   const torch::Tensor& hx = {},
                                                   const torch::Tensor& lengths = {});
};
TORCH_MODULE(RNN);

}  // namespace cellstate
