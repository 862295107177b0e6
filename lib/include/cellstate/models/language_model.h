#pragma once
// A recurrent language model, laid out like PyTorch's word-language-model
// example (modules `encoder`, `rnn`, `decoder`, so weights interchange):
//
//   ids -> embedding "encoder" (vocabulary dropout) -> embed dropout
//       -> stacked unidirectional recurrent layers "rnn" from cellstate
//          (LSTM/GRU/RNN, custom or built-in, hidden dropout between layers,
//          weight dropout on weight_hh)
//       -> dropout -> [linear "projection" hidden->embed, when tied and the
//          sizes differ] -> linear "decoder" -> logits over the vocabulary
//
// With `tie`, the decoder's weight is the embedding matrix (Press & Wolf
// 2017; Inan et al. 2017). The regularisers are AWD-LSTM's (Merity, Keskar &
// Socher 2017; nn/dropout.h): with `locked_dropout` every dropout mask is
// drawn once per sequence and shared over time; `vocabulary_dropout` drops
// whole tokens from the embedding matrix; `weight_dropout` is DropConnect on
// the recurrent weights. All act in training mode only.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "cellstate/decode/step_model.h"
#include "cellstate/nn/gemm.h"
#include "cellstate/nn/rnn.h"

#include <vector>

namespace cellstate {

struct LanguageModelOptions {
  explicit LanguageModelOptions(int64_t vocab_size) : vocab_size_(vocab_size) {}
  /// Tokens in the vocabulary (no default).
  TORCH_ARG(int64_t, vocab_size);
  /// Embedding size (default 256).
  TORCH_ARG(int64_t, embed) = 256;
  /// Hidden units per layer (default 512).
  TORCH_ARG(int64_t, hidden) = 512;
  /// Stacked layers (default 2).
  TORCH_ARG(int64_t, layers) = 2;
  /// Recurrent cell (default LSTM).
  TORCH_ARG(RecurrentKind, kind) = RecurrentKind::kLSTM;
  /// cellstate's fused kernels or torch::nn (default custom).
  TORCH_ARG(Implementation, impl) = Implementation::kCustom;
  /// Dropout on the last layer's output, and on the embeddings and between
  /// layers unless embed_dropout / hidden_dropout say otherwise (default 0.2).
  TORCH_ARG(double, dropout) = 0.2;
  /// Dropout on the embeddings (default: unset, `dropout`).
  TORCH_ARG(c10::optional<double>, embed_dropout) = c10::nullopt;
  /// Dropout between recurrent layers (default: unset, `dropout`).
  TORCH_ARG(c10::optional<double>, hidden_dropout) = c10::nullopt;
  /// One mask per sequence shared over time for the three dropouts above
  /// (default false: a fresh mask per position).
  TORCH_ARG(bool, locked_dropout) = false;
  /// Probability of dropping a whole token type from the embedding matrix
  /// for a forward pass (default 0).
  TORCH_ARG(double, vocabulary_dropout) = 0.0;
  /// DropConnect on each layer's weight_hh (default 0).
  TORCH_ARG(double, weight_dropout) = 0.0;
  /// Decoder weight shared with the embeddings (default false).
  TORCH_ARG(bool, tie) = false;
};

/// What a forward pass computes, with the last layer's outputs that
/// activation regularisation reads.
struct LanguageModelOutput {
  torch::Tensor logits;     ///< [T, B, V]
  RecurrentState state;     ///< after the last step
  torch::Tensor hidden;     ///< last layer's outputs [T, B, hidden], before dropout
  torch::Tensor dropped;    ///< the same after the output dropout (what the decoder reads)
};

/// Memoised first-layer input projections of a recurrence fed by an
/// embedding: row v = E[v] · W_ih_l0ᵀ + b_ih_l0 ([G*H]), computed the first
/// time token v is stepped (by the same product the step would compute) and
/// reused after. A generated token then reads one row instead of all of
/// W_ih_l0: a sixth of the recurrent weights of a 3-layer LSTM. Every row is
/// recomputed after any of E, W_ih_l0, b_ih_l0 changed (another tensor, an
/// in-place update, a new dtype) and when the thread's matmul precision is
/// not the one the rows were computed at. Not for concurrent use.
class InputProjectionCache {
 public:
  /// Largest table kept ([V, G*H] values; pages of rows never seen are
  /// never touched): larger models step without the cache.
  static constexpr int64_t kMaxBytes = int64_t{128} << 20;

  InputProjectionCache() = default;
  /// A copy (a cloned model's) starts empty: it holds nothing of the original's weights.
  InputProjectionCache(const InputProjectionCache& /*other*/) {}
  InputProjectionCache& operator=(const InputProjectionCache& other) {
    if (this != &other) *this = InputProjectionCache();
    return *this;
  }
  InputProjectionCache(InputProjectionCache&&) = default;
  InputProjectionCache& operator=(InputProjectionCache&&) = default;

  /// ids [B] -> [B, G*H]; undefined when the table would exceed kMaxBytes.
  torch::Tensor lookup(const torch::Tensor& ids, const torch::Tensor& embedding, const torch::Tensor& w_ih,
                       const torch::Tensor& b_ih);

 private:
  /// What a row depends on: the stamps of E, W_ih and b_ih, whose storages
  /// are held so that their addresses cannot be reused by other tensors meanwhile.
  std::vector<TensorStamp> sources_;
  std::vector<c10::Storage> held_;
  MatmulPrecision precision_ = MatmulPrecision::kFloat32;  // the rows' (nn/gemm.h)
  torch::Tensor table_;          // [V, G*H]
  std::vector<uint8_t> filled_;  // per row of table_
};

class LanguageModelImpl : public torch::nn::Cloneable<LanguageModelImpl> {
 public:
  explicit LanguageModelImpl(LanguageModelOptions options);
  /// Registers the modules and initialises them: embeddings and decoder
  /// U(−0.1, 0.1), decoder bias 0 (as the PyTorch example), recurrent
  /// weights as the recurrent module does.
  void reset() override;

  /// ids [T, B] int64 and an optional state (undefined = zeros) ->
  /// logits [T, B, V] and the state after the last step.
  std::pair<torch::Tensor, RecurrentState> forward(const torch::Tensor& ids, const RecurrentState& state = {});
  /// The same with the last layer's outputs.
  LanguageModelOutput forward_outputs(const torch::Tensor& ids, const RecurrentState& state = {});

  /// One step for generation, without autograd: ids [B] -> logits [B, V],
  /// updating `state` (zeros when undefined). The custom recurrence in eval
  /// mode steps in place, its first layer's input projections memoised per
  /// token (InputProjectionCache).
  torch::Tensor step(const torch::Tensor& ids, RecurrentState& state);

  LanguageModelOptions options;
  torch::nn::Embedding encoder{nullptr};
  std::shared_ptr<RecurrentModuleImpl> rnn;
  torch::nn::Linear projection{nullptr};  // tie with embed != hidden only
  torch::Tensor decoder_weight;  // "decoder.weight"; undefined when tied
  torch::Tensor decoder_bias;    // "decoder.bias"

 private:
  /// Last layer's outputs [..., hidden] -> logits [..., V].
  torch::Tensor decode(torch::Tensor y);
  InputProjectionCache input_projections_;
};
TORCH_MODULE(LanguageModel);

/// A LanguageModel as a StepModel (decode/step_model.h), for generation:
/// each row is a stream with its own recurrent state.
class LanguageModelStepper : public StepModel {
 public:
  /// `state`: the state after the context read so far (undefined: zeros).
  /// The model should be in eval mode.
  LanguageModelStepper(LanguageModel model, RecurrentState state = {});
  /// previous [N] -> logits [N, V] of the next token; advances the state.
  torch::Tensor logits(const torch::Tensor& previous, torch::Tensor* attention) override;
  void select(const torch::Tensor& rows) override;

 private:
  LanguageModel model_;
  RecurrentState state_;
};

}  // namespace cellstate
