#pragma once
// A recurrent text classifier:
//
//   ids -> embedding (+ word dropout, embedding dropout)
//       -> recurrent layers from cellstate (LSTM/GRU/RNN, custom or built-in,
//          stacked, optionally bidirectional, dropout between layers)
//       -> pooling over time: last | max | mean | attention
//       -> dropout -> linear -> logits (softmax gives class probabilities)
//
// Padding is masked in every pooling, so a text's logits do not depend on
// what else is in its batch.

#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <string>

#include "cellstate/nn/rnn.h"

namespace cellstate {

enum class Pooling { kLast, kMax, kMean, kAttention };
Pooling parse_pooling(const std::string& name);
std::string to_string(Pooling pooling);

struct TextClassifierOptions {
  TextClassifierOptions(int64_t vocab_size, int64_t num_classes)
      : vocab_size_(vocab_size), num_classes_(num_classes) {}
  /// Tokens in the vocabulary (id 0 is padding).
  TORCH_ARG(int64_t, vocab_size);
  /// Output classes.
  TORCH_ARG(int64_t, num_classes);
  /// Embedding size. Default 128.
  TORCH_ARG(int64_t, embed) = 128;
  /// Recurrent hidden size per direction. Default 256.
  TORCH_ARG(int64_t, hidden) = 256;
  /// Stacked recurrent layers. Default 1.
  TORCH_ARG(int64_t, layers) = 1;
  /// Bidirectional recurrent layers. Default true.
  TORCH_ARG(bool, bidirectional) = true;
  /// Recurrent cell. Default LSTM.
  TORCH_ARG(RecurrentKind, kind) = RecurrentKind::kLSTM;
  /// cellstate's fused kernels or torch::nn. Default custom.
  TORCH_ARG(Implementation, impl) = Implementation::kCustom;
  /// How the sequence of hidden states becomes one vector. Default max.
  TORCH_ARG(Pooling, pooling) = Pooling::kMax;
  /// Dropout between recurrent layers and before the output layer. Default 0.5.
  TORCH_ARG(double, dropout) = 0.5;
  /// Dropout on embedding vectors. Default 0.2.
  TORCH_ARG(double, embed_dropout) = 0.2;
  /// Training only: each token is replaced by unk with this probability. Default 0.
  TORCH_ARG(double, word_dropout) = 0.0;
  /// The id word dropout puts in place of a token. Default 1 (the
  /// tokenizer's unk, data/tokenizer.h).
  TORCH_ARG(int64_t, unk_id) = 1;
  /// Weight of an auxiliary language-model loss while training: the forward
  /// states predict the next token and the backward states the previous
  /// one, through a projection tied to the embeddings. 0 turns it off (and
  /// adds no parameters). Default 0.
  TORCH_ARG(double, lm_weight) = 0.0;
};

class TextClassifierImpl : public torch::nn::Cloneable<TextClassifierImpl> {
 public:
  explicit TextClassifierImpl(TextClassifierOptions options);
  void reset() override;
  /// ids [B, T] int64 (padded with 0), lengths [B] int64 -> logits [B, C].
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& lengths);
  /// Logits and the auxiliary language-model loss (a scalar; 0 when
  /// lm_weight is 0), from one pass of the encoder.
  std::pair<torch::Tensor, torch::Tensor> forward_with_lm(const torch::Tensor& ids, const torch::Tensor& lengths);

  TextClassifierOptions options;
  torch::nn::Embedding embedding{nullptr};
  std::shared_ptr<RecurrentModuleImpl> encoder;
  torch::nn::Linear attention_proj{nullptr};  // attention pooling only
  torch::nn::Linear attention_score{nullptr};
  torch::nn::Linear output{nullptr};
  torch::nn::Linear lm_proj{nullptr};  // lm_weight > 0 only
};
TORCH_MODULE(TextClassifier);

}  // namespace cellstate
