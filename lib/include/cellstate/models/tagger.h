#pragma once
// A sequence tagger (Lample et al. 2016's BiLSTM-CRF, with subword pieces):
//
//   each word w ->  [ word embedding (rare words and word dropout -> unk)
//                   ; character BiLSTM over w's characters (final states)
//                   ; mean of w's SentencePiece piece embeddings
//                   ; casing-class embedding ]
//               -> dropout -> BiLSTM from cellstate over the sentence
//               -> dropout -> linear -> emission scores e[t, tag]
//               -> CRF (transitions constrained by the tag scheme), or a
//                  per-token softmax (`crf` false) for comparison.
//
// Every part but the word embedding can be switched off by a size of 0.

#include <torch/nn/cloneable.h>
#include "cellstate/nn/dropout.h"
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "cellstate/nn/crf.h"
#include "cellstate/nn/rnn.h"

namespace cellstate {

/// Casing classes of a word (the casing feature).
enum class Casing : int64_t { kPad = 0, kLower, kUpper, kTitle, kMixed, kNumber, kHasDigit, kOther, kCount };
Casing word_casing(const std::string& word);

struct SequenceTaggerOptions {
  SequenceTaggerOptions(int64_t word_vocab, int64_t num_tags) : word_vocab_(word_vocab), num_tags_(num_tags) {}
  /// Words with an embedding, pad (0) and unk (1) included (no default).
  TORCH_ARG(int64_t, word_vocab);
  /// Output tags (no default).
  TORCH_ARG(int64_t, num_tags);
  /// Word embedding size (default 100).
  TORCH_ARG(int64_t, word_embed) = 100;
  /// Characters with an embedding, pad and unk included; 0: no character model (default 0).
  TORCH_ARG(int64_t, char_vocab) = 0;
  /// Character embedding size (default 25).
  TORCH_ARG(int64_t, char_embed) = 25;
  /// Character BiLSTM units per direction (default 25).
  TORCH_ARG(int64_t, char_hidden) = 25;
  /// SentencePiece vocabulary; 0: no piece features (default 0).
  TORCH_ARG(int64_t, piece_vocab) = 0;
  /// Piece embedding size (default 50).
  TORCH_ARG(int64_t, piece_embed) = 50;
  /// Casing embedding size; 0: no casing feature (default 8).
  TORCH_ARG(int64_t, casing_embed) = 8;
  /// Sentence recurrent units per direction (default 200).
  TORCH_ARG(int64_t, hidden) = 200;
  /// Stacked sentence layers (default 1).
  TORCH_ARG(int64_t, layers) = 1;
  /// Recurrence of the sentence and character layers (default LSTM).
  TORCH_ARG(RecurrentKind, kind) = RecurrentKind::kLSTM;
  /// cellstate's kernels or torch::nn (default custom).
  TORCH_ARG(Implementation, impl) = Implementation::kCustom;
  /// Dropout on the word representations and the sentence layer's outputs (default 0.5).
  TORCH_ARG(double, dropout) = 0.5;
  /// CRF output layer; false: independent softmax per token (default true).
  TORCH_ARG(bool, crf) = true;
};

/// A padded batch of sentences, as the tagger reads it.
struct TaggerBatch {
  torch::Tensor words;          // [B, T] int64, 0 = padding
  torch::Tensor casing;         // [B, T] int64 (Casing)
  torch::Tensor lengths;        // [B] int64
  torch::Tensor mask;           // [B, T] bool
  torch::Tensor chars;          // [U, L] int64: the U distinct character sequences of the batch's words
  torch::Tensor char_lengths;   // [U] int64
  torch::Tensor char_index;     // [N] int64: the row of `chars` of each of the N real words, sentence-major
  torch::Tensor pieces;         // [P] int64: pieces of the N words, concatenated
  torch::Tensor piece_offsets;  // [N] int64: where each word's pieces start
};

/// One sentence's inputs, per word.
struct TaggerInput {
  std::vector<int64_t> words;
  std::vector<int64_t> casing;
  std::vector<std::vector<int64_t>> chars;   // empty when there is no character model
  std::vector<std::vector<int64_t>> pieces;  // empty when there are no piece features
};

/// Pads sentences (each at least one word) into a batch.
TaggerBatch make_tagger_batch(const std::vector<const TaggerInput*>& sentences);

class SequenceTaggerImpl : public torch::nn::Cloneable<SequenceTaggerImpl> {
 public:
  explicit SequenceTaggerImpl(SequenceTaggerOptions options);
  void reset() override;

  /// Emission scores [B, T, K] (zero where the mask is false).
  torch::Tensor emissions(const TaggerBatch& batch);
  /// Training loss: mean over sentences of -log P(tags) (CRF), or mean token
  /// cross-entropy (softmax). tags [B, T] int64.
  torch::Tensor loss(const TaggerBatch& batch, const torch::Tensor& tags);
  /// The same loss from emissions already computed for `batch`.
  torch::Tensor loss(const TaggerBatch& batch, const torch::Tensor& tags, const torch::Tensor& emissions);
  /// Best tag sequence per sentence (Viterbi with the CRF, argmax without).
  std::vector<std::vector<int64_t>> decode(const TaggerBatch& batch, const torch::Tensor& emissions);

  SequenceTaggerOptions options;
  torch::nn::Embedding word_embedding{nullptr};
  torch::nn::Embedding char_embedding{nullptr};
  std::shared_ptr<RecurrentModuleImpl> char_rnn;
  torch::nn::Embedding piece_embedding{nullptr};
  torch::nn::Embedding casing_embedding{nullptr};
  std::shared_ptr<RecurrentModuleImpl> rnn;
  torch::nn::Linear output{nullptr};
  Dropout drop{nullptr};
  CRF crf{nullptr};
};
TORCH_MODULE(SequenceTagger);

}  // namespace cellstate
