#pragma once
// SentencePiece tokenizer (unigram, BPE, char or word models) with the ids
// every cellstate model relies on: pad = 0, unk = 1, bos = 2, eos = 3.
//
// SentencePiece runs in its own link-map namespace (see lib/spm_shim), so it
// coexists with LibTorch in one process; this class is the only door to it.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cellstate {

/// Options for training a SentencePiece model (SentencePiece's own names in
/// brackets).
struct TokenizerTrainOptions {
  /// Vocabulary size including the four special pieces [vocab_size]. With a
  /// small corpus the vocabulary may come out smaller (the limit is soft).
  int64_t vocab_size = 8000;
  /// unigram | bpe | char | word [model_type].
  std::string model_type = "unigram";
  /// Share of characters the model must cover; rarer ones become unk
  /// [character_coverage].
  double character_coverage = 1.0;
  /// Pieces kept whole and never split, e.g. tags [user_defined_symbols].
  std::vector<std::string> user_symbols;
  /// Pieces with reserved ids that encode() never produces from text, for
  /// markers a model inserts itself (e.g. a line break) [control_symbols].
  std::vector<std::string> control_symbols;
  /// Normalisation rule: nmt_nfkc, nfkc, nmt_nfkc_cf, nfkc_cf or identity
  /// [normalization_rule_name].
  std::string normalization = "nmt_nfkc";
  /// At most this many sentences are sampled from the inputs
  /// [input_sentence_size].
  int64_t max_sentences = 2000000;
};

class Tokenizer {
 public:
  static constexpr int64_t kPadId = 0;
  static constexpr int64_t kUnkId = 1;
  static constexpr int64_t kBosId = 2;
  static constexpr int64_t kEosId = 3;

  /// Loads a model file; a missing, empty, corrupt model, or one whose special
  /// ids differ from the above, is an InputError naming the file.
  static Tokenizer load(const std::string& path);
  /// Loads from the bytes of a model file; `name` is used in error messages.
  static Tokenizer from_bytes(std::string bytes, const std::string& name);
  /// Trains on text files (plain or .gz; one sentence per line, empty lines
  /// ignored) and returns the model.
  static Tokenizer train(const std::vector<std::string>& files, const TokenizerTrainOptions& options);
  /// Trains on sentences held in memory.
  static Tokenizer train_on(const std::vector<std::string>& sentences,
                            const TokenizerTrainOptions& options);
  /// Writes the model file atomically.
  void save(const std::string& path) const;
  const std::string& bytes() const { return bytes_; }

  std::vector<int64_t> encode(std::string_view text) const;
  /// A sampled segmentation (subword regularisation, unigram models): one
  /// of the `nbest` best segmentations with probability proportional to
  /// P(segmentation)^alpha (alpha 0.1-0.5 is typical; 0 is uniform). The
  /// sample depends only on (text, alpha, nbest, seed), so training that
  /// derives `seed` from its seed, epoch and example is reproducible.
  std::vector<int64_t> sample_encode(std::string_view text, double alpha, uint64_t seed,
                                     int nbest = 64) const;
  /// The pieces of encode() (unknown characters show as "<unk>").
  std::vector<std::string> encode_pieces(std::string_view text) const;
  /// Text of the ids; pad, bos and eos are skipped, unk decodes to " ⁇ ".
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t vocab_size() const { return vocab_size_; }
  std::string id_to_piece(int64_t id) const;
  /// Id of a piece, kUnkId when absent.
  int64_t piece_to_id(std::string_view piece) const;

 private:
  struct Handle;
  Tokenizer(std::shared_ptr<Handle> handle, std::string bytes, int64_t vocab_size);
  std::vector<int64_t> encode_impl(std::string_view text, int nbest, double alpha,
                                   uint64_t seed) const;

  std::shared_ptr<Handle> handle_;
  std::string bytes_;
  int64_t vocab_size_ = 0;
};

}  // namespace cellstate
