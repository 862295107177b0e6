#pragma once
// An attention encoder-decoder (Luong et al. 2015; Bahdanau et al. 2015):
//
//   encoder: source embedding -> bidirectional recurrent layers from
//            cellstate -> outputs e_j [2H] for every source position j
//   bridge:  decoder state s_0 = tanh(W_b [h_fwd; h_bwd]) of the encoder's
//            final states, per layer (c likewise for LSTMs)
//   decoder, at step t, with input feeding:
//            x_t = [embed(y_{t-1}); h~_{t-1}]
//            s_t = LSTM cells (stacked, dropout between) (x_t, s_{t-1})
//            attention over source positions (padding masked):
//              general (Luong):  score_j = s_t . W_a e_j
//              additive (Bahdanau): score_j = v . tanh(W_q s_t + W_k e_j)
//            a = softmax(score), context c_t = sum_j a_j e_j
//            h~_t = tanh(W_c [c_t; s_t])
//            logits_t = W_o dropout(h~_t) + b_o   (W_o optionally tied to the
//            target embeddings, through a projection when sizes differ)
//
// Decoding (greedy, beam, sampling) lives in decode/decoding.h; this module
// offers the encoder and one decoder step.

#include <torch/nn/cloneable.h>
#include "cellstate/nn/dropout.h"
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "cellstate/nn/attention.h"
#include "cellstate/nn/cells.h"
#include "cellstate/decode/step_model.h"
#include "cellstate/nn/rnn.h"
#include "cellstate/nn/step_weights.h"

namespace cellstate {

enum class Attention { kGeneral, kAdditive };
/// "general" (Luong) | "additive" or "bahdanau".
Attention parse_attention(const std::string& name);

struct Seq2SeqOptions {
  Seq2SeqOptions(int64_t source_vocab, int64_t target_vocab)
      : source_vocab_(source_vocab), target_vocab_(target_vocab) {}
  /// Source and target vocabularies, pad = 0 (no default).
  TORCH_ARG(int64_t, source_vocab);
  TORCH_ARG(int64_t, target_vocab);
  /// Embedding size of both sides (default 256).
  TORCH_ARG(int64_t, embed) = 256;
  /// Encoder units per direction; the decoder has 2 * hidden (default 256).
  TORCH_ARG(int64_t, hidden) = 256;
  /// Layers of the encoder and of the decoder (default 1).
  TORCH_ARG(int64_t, layers) = 1;
  /// cellstate's kernels or torch::nn for the encoder (default custom).
  TORCH_ARG(Implementation, impl) = Implementation::kCustom;
  /// Dropout on embeddings, between layers and before the output layer (default 0.3).
  TORCH_ARG(double, dropout) = 0.3;
  /// Attention scoring (default general).
  TORCH_ARG(Attention, attention) = Attention::kGeneral;
  /// Feed h~_{t-1} into the decoder's input at step t (default true).
  TORCH_ARG(bool, input_feeding) = true;
  /// Output layer weight = target embeddings (default false).
  TORCH_ARG(bool, tie) = false;
  /// One embedding matrix for source and target (a joint vocabulary; default false).
  TORCH_ARG(bool, share_embeddings) = false;
};

/// What the encoder gives the decoder, for a batch (or its beams).
struct Encoded {
  /// The encoder outputs (memory() [B, S, 2H]) and their projection for the
  /// attention (keys() [B, S, D]).
  AttentionSource source;
  torch::Tensor mask;        // [B, S] bool, true at real source positions
  std::vector<torch::Tensor> h, c;  // decoder state per layer, [B, D] each
  torch::Tensor feed;        // [B, D] h~ of the previous step (zeros at the start)

  /// The rows `rows` [N] int64 of everything (beam expansion and reordering).
  Encoded select(const torch::Tensor& rows) const;
  /// The rows `rows` of the decoder state (h, c, feed) only; memory, keys and
  /// mask stay (for rows that read the same source as before).
  Encoded select_state(const torch::Tensor& rows) const;
};

class Seq2SeqImpl : public torch::nn::Cloneable<Seq2SeqImpl> {
 public:
  explicit Seq2SeqImpl(Seq2SeqOptions options);
  void reset() override;

  /// source [B, S] int64 padded with 0, lengths [B] -> initial decoder state.
  Encoded encode(const torch::Tensor& source, const torch::Tensor& lengths);
  /// One decoder step: previous target tokens [B] -> logits [B, V];
  /// updates `state` and, if given, writes the attention [B, S].
  torch::Tensor step(const torch::Tensor& previous, Encoded& state, torch::Tensor* attention = nullptr);
  /// The recurrent part of a step: previous tokens [B] -> attentional
  /// hidden state h~ = tanh(W_c [context; h]) [B, D]; updates `state`.
  torch::Tensor attend(const torch::Tensor& previous, Encoded& state, torch::Tensor* attention = nullptr);
  /// The same step from the previous tokens' embeddings [B, E] (dropout
  /// applied): teacher forcing embeds all target positions at once, so the
  /// embedding's gradient is formed once per batch, not once per step.
  torch::Tensor attend_embedded(const torch::Tensor& embedded, Encoded& state, torch::Tensor* attention = nullptr);
  /// Output layer: h~ [..., D] -> logits [..., V] (dropout, then W_o or the tied embeddings).
  torch::Tensor logits(const torch::Tensor& attended);
  /// Teacher forcing: target_in [B, T] (bos y_1 .. y_{T-1}) -> h~ [B, T, D],
  /// so the output layer can run once over the positions that count.
  torch::Tensor decode_states(const torch::Tensor& source, const torch::Tensor& lengths, const torch::Tensor& target_in);
  /// Teacher forcing: target_in [B, T] -> logits [B, T, V].
  torch::Tensor forward(const torch::Tensor& source, const torch::Tensor& lengths, const torch::Tensor& target_in);

  int64_t decoder_size() const { return 2 * options.hidden(); }

  Seq2SeqOptions options;
  torch::nn::Embedding source_embedding{nullptr};
  torch::nn::Embedding target_embedding{nullptr};  // the source one when shared
  std::shared_ptr<RecurrentModuleImpl> encoder;
  std::vector<torch::nn::Linear> bridge_h, bridge_c;
  std::vector<LSTMCell> decoder;
  torch::nn::Linear attention_key{nullptr};    // W_a (general) or W_k (additive)
  torch::nn::Linear attention_query{nullptr};  // additive: W_q
  torch::nn::Linear attention_score{nullptr};  // additive: v
  torch::nn::Linear combine{nullptr};          // W_c
  torch::nn::Linear projection{nullptr};       // tied with embed != D
  torch::nn::Linear output{nullptr};           // untied: W_o, b_o
  torch::Tensor output_bias;                   // tied: b_o
  Dropout drop{nullptr};

 private:
  /// The decoder's weights passed through StepWeights (nn/step_weights.h)
  /// for the T steps of a teacher-forced batch: each cell's four, then W_c.
  struct StepDecoderWeights {
    std::vector<StepWeights> cells;
    StepWeights combine;
  };
  /// attend_embedded reading `weights` (null: the modules' own).
  torch::Tensor attend_with(const torch::Tensor& embedded, Encoded& state, const StepDecoderWeights* weights,
                            torch::Tensor* attention);
};
TORCH_MODULE(Seq2Seq);

/// A Seq2Seq as a StepModel (decode/step_model.h): encodes a batch once, then
/// steps. A search's reordering moves rows among the beams of one sentence,
/// which read the same source: select() copies the encoder's memory, keys and
/// mask only when a row's source changes (expanding to beams, dropping
/// sentences), the decoder state every time.
class Seq2SeqStepper : public StepModel {
 public:
  /// source [B, S], lengths [B]; the model should be in eval mode.
  Seq2SeqStepper(Seq2Seq model, const torch::Tensor& source, const torch::Tensor& lengths);
  torch::Tensor logits(const torch::Tensor& previous, torch::Tensor* attention) override;
  void select(const torch::Tensor& rows) override;

 private:
  Seq2Seq model_;
  Encoded state_;
  torch::Tensor sources_;  // [N] int64: the source sentence (row of the batch) each row reads
};

}  // namespace cellstate
