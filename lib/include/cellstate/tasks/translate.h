#pragma once
// cellstate-translate's library side: training a Seq2Seq on parallel text
// (teacher forcing, label smoothing, early stopping on dev BLEU), loading
// it, and translating sentences with decoding.h's searches.

#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cellstate/decode/decoding.h"
#include "cellstate/eval/metrics.h"
#include "cellstate/tasks/options.h"
#include "cellstate/models/seq2seq.h"
#include "cellstate/data/tokenizer.h"
#include "cellstate/train/trainer.h"

namespace cellstate {

struct TranslateTrainConfig {
  ModelOptions model;
  TrainingOptions training;
  RuntimeOptions runtime;
  std::string src_train, tgt_train, src_dev, tgt_dev;
  int64_t vocab_size = 8000;          // SentencePiece vocabulary (joint, or each side's)
  bool joint_vocab = true;            // one tokenizer for both languages (embeddings shared)
  int64_t max_words = 80;             // training pairs with a longer side are dropped
  std::string attention = "general";  // general | additive
  bool input_feeding = true;
  bool tie = true;                    // output layer = target embeddings (three-way tied with a joint vocabulary)
  double label_smoothing = 0.1;
  int64_t max_tokens = 0;             // > 0: batches by padded target tokens instead of --batch-size
  int64_t dev_beam = 1;               // beam for the dev BLEU of early stopping
  bool half = false;
};

TrainResult train_translation(const TranslateTrainConfig& config, const ProcessGroup& group = {});

/// The train options a fine-tuning run (--init-from `init_from`) takes from
/// that model (tasks/finetune.h): its architecture and tokenizers fixed, its
/// label smoothing and batching as defaults.
InheritedOptions translate_inherited_options(const std::string& init_from);

/// One translation: the best hypotheses with their text.
struct Translation {
  std::vector<Hypothesis> hypotheses;  // best first
  std::vector<std::string> texts;      // detokenised, one per hypothesis
  std::vector<std::string> source_pieces;  // what was translated
  /// Source pieces before truncation: an input longer than the model's
  /// max_source_tokens (256, in config.json) is translated up to that length.
  int64_t source_length = 0;
  bool truncated() const { return source_length > static_cast<int64_t>(source_pieces.size()); }
};

class TranslationModel {
 public:
  static TranslationModel load(const std::string& dir, std::optional<Implementation> impl = {}, bool verify = true);
  const nlohmann::json& config() const { return config_; }
  Seq2Seq& model() { return model_; }
  const Tokenizer& source_tokenizer() const { return *source_; }
  const Tokenizer& target_tokenizer() const { return target_ ? *target_ : *source_; }
  /// Longer inputs are translated up to this many source pieces.
  int64_t max_source_tokens() const { return max_source_tokens_; }
  /// A source sentence's ids as translation reads it (at most
  /// max_source_tokens() pieces; an empty one is a single unk).
  std::vector<int64_t> encode_source(const std::string& text) const;
  /// A target sentence's ids as training reads it: bos, its pieces, eos.
  std::vector<int64_t> encode_target(const std::string& text) const;

  /// Translates sentences in batches (sorted by length; results in input order).
  std::vector<Translation> translate(const std::vector<std::string>& sentences, const DecodingOptions& options,
                                     int64_t batch_size = 32, const std::function<void(int64_t)>& progress = {});

 private:
  TranslationModel(nlohmann::json config, Seq2Seq model, std::shared_ptr<Tokenizer> source,
                   std::shared_ptr<Tokenizer> target, int64_t max_source_tokens);
  nlohmann::json config_;
  Seq2Seq model_;
  std::shared_ptr<Tokenizer> source_, target_;  // target_ null: joint
  int64_t max_source_tokens_;
};

/// How translate_files reads and writes.
struct TranslateFilesOptions {
  DecodingOptions decoding;
  /// text: one translation per line (with nbest > 1, nbest lines "SCORE<TAB>TEXT"
  /// per input line) | jsonl: a record per line with each sentence's n-best.
  std::string format = "text";
  bool attention_weights = false;  // jsonl: each hypothesis's attention over the source
  std::string svg_dir;          // non-empty: DIR/N.svg, the attention heatmap of sentence N (1-based)
  int64_t batch_size = 32;      // sentences per batch
  std::string error_prefix;     // put before each bad input's message and warning (the command's name)
  bool progress = false;        // lines done and lines/s on stderr when it is a terminal
};

/// The JSON record `translate --format jsonl` writes for each of `lines`:
/// {"source", "translation", "sentences": [{"source", "source_tokens",
/// "source_truncated", "nbest": [{"text", "score", "log_prob", "tokens",
/// "finished"}]}]}. Translated together in batches; a line's record does not
/// depend on the others (beam search runs per sentence).
std::vector<nlohmann::json> translation_records(TranslationModel& model, const std::vector<std::string>& lines,
                                                const TranslateFilesOptions& options);

/// Translates each line of each input ("-" is standard input) and writes the
/// results to `out`, a batch at a time. A line is split into sentences
/// (data/word_split.h), each translated alone (the model was trained on
/// single sentences) and the translations joined with a space; a blank or
/// whitespace-only line gives an empty result. With n-best lists, line k of
/// an input line joins the k-th hypothesis of each of its sentences, with the
/// sum of their scores. An input longer than the model's
/// limit is translated up to it, with a FILE:LINE warning on `err`; an
/// unreadable input is reported on `err` and skipped. Returns 2 if any input
/// failed, else 0.
int translate_files(TranslationModel& model, const std::vector<std::string>& inputs,
                    const TranslateFilesOptions& options, std::ostream& out, std::ostream& err);

/// BLEU (sacreBLEU default, `lowercase` optional) and chrF of the model's
/// translations of `src` against `ref`.
struct TranslationScores {
  BleuScore bleu;
  double chrf = 0;
  int64_t sentences = 0;
};
TranslationScores evaluate_translation(TranslationModel& model, const std::string& src, const std::string& ref,
                                       const DecodingOptions& options, bool lowercase, int64_t batch_size = 32,
                                       bool progress = false);

/// An attention heatmap as a self-contained SVG document: source pieces as
/// columns, target pieces as rows, each cell shaded by its weight (white 0,
/// dark blue 1), pieces as labels (XML-escaped).
/// attention[t][s]: weight of source piece s for target piece t.
std::string attention_svg(const std::vector<std::string>& source, const std::vector<std::string>& target,
                          const std::vector<std::vector<float>>& attention);

}  // namespace cellstate
