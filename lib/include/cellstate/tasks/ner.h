#pragma once
// cellstate-ner's library side: training a SequenceTagger on CoNLL data,
// loading it, tagging sentences (with CRF marginal confidences for every
// entity), conlleval-exact evaluation, and prediction over raw text, CoNLL
// columns or pre-tokenised lines.

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "cellstate/eval/metrics.h"
#include "cellstate/tasks/options.h"
#include "cellstate/data/readers.h"
#include "cellstate/models/tagger.h"
#include "cellstate/data/tokenizer.h"
#include "cellstate/train/trainer.h"

namespace cellstate {

/// The most characters of one word the character features read (its first
/// and last halves; a longer word is cut, with a FILE:LINE warning when
/// tagging), and the most SentencePiece pieces of one word, so that one
/// absurd "word" cannot make a sentence cost more than its length in words.
constexpr int64_t kMaxWordChars = 64;
constexpr int64_t kMaxWordPieces = 32;

struct NerTrainConfig {
  ModelOptions model;
  TrainingOptions training;
  RuntimeOptions runtime;
  std::string train_path;
  std::string dev_path;
  ConllOptions conll;                // columns of the data files
  std::string data_scheme = "auto";  // the files' tag scheme: auto | iob1 | bio | iobes
  std::string tag_scheme = "iobes";  // what the model predicts: bio | iobes
  std::string decoder = "crf";       // crf | softmax
  int64_t char_embed = 25;           // 0: no character model
  int64_t char_hidden = 25;
  int64_t piece_vocab = 4000;        // SentencePiece vocabulary of the piece features (0: none)
  int64_t piece_embed = 50;
  int64_t casing_embed = 8;          // 0: no casing feature
  int64_t min_word_count = 1;        // rarer training words are unknown
  double rare_word_dropout = 0.5;    // training: a word seen once becomes unk with this probability
  double word_dropout = 0.0;         // training: any word becomes unk with this probability
  bool half = false;                 // store weights as float16
};

/// Trains, writing the model directory; prints progress unless quiet.
TrainResult train_ner(const NerTrainConfig& config, const ProcessGroup& group = {});

/// The train options a fine-tuning run (--init-from `init_from`) takes from
/// that model (tasks/finetune.h): its architecture and tag scheme fixed, its
/// word dropouts as defaults.
InheritedOptions ner_inherited_options(const std::string& init_from);

/// Reads the scheme of a CoNLL file's tags: IOBES if it has E- or S- tags,
/// IOB1 if an entity starts with I-, else BIO.
TagScheme detect_tag_scheme(const std::vector<ConllSentence>& sentences);

/// An entity found in a sentence, with the CRF's probability that exactly
/// this span is this entity (for the softmax decoder: the product of its
/// tokens' tag probabilities).
struct Entity {
  Span span;
  double confidence = 0;
};

struct TaggedSentence {
  std::vector<std::string> tags;  // in the model's scheme
  std::vector<Entity> entities;
};

/// A trained tagger, ready to tag.
class NerModel {
 public:
  static NerModel load(const std::string& dir, std::optional<Implementation> impl = {}, bool verify = true);

  const nlohmann::json& config() const { return config_; }
  TagScheme scheme() const { return scheme_; }
  const std::vector<std::string>& tags() const { return tags_; }
  SequenceTagger& tagger() { return tagger_; }

  /// The tagger's input for one sentence (word, casing, character and piece
  /// ids), as tag() builds it.
  TaggerInput encode(const std::vector<std::string>& tokens) const;

  /// Tags tokenised sentences (each at least one token), batched by length;
  /// `confidences` computes each entity's probability.
  std::vector<TaggedSentence> tag(const std::vector<std::vector<std::string>>& sentences, bool confidences = true,
                                  int64_t batch_size = 32, const std::function<void(int64_t)>& progress = {});

 private:
  NerModel(nlohmann::json config, SequenceTagger tagger, std::vector<std::string> tags, TagScheme scheme,
           std::vector<std::string> words, std::vector<std::string> chars, std::optional<Tokenizer> pieces);

  nlohmann::json config_;
  SequenceTagger tagger_;
  std::vector<std::string> tags_;
  TagScheme scheme_;
  std::unordered_map<std::string, int64_t> words_;
  std::unordered_map<std::string, int64_t> chars_;
  std::optional<Tokenizer> pieces_;
};

/// Evaluates on a CoNLL file, counting entities and tokens exactly as
/// conlleval does in the data's scheme; `output_path` (if set) receives
/// conlleval's input: "token gold predicted" per line, a blank line between
/// sentences, predictions converted to the data's scheme.
ChunkReport evaluate_ner(NerModel& model, const std::string& path, const ConllOptions& conll,
                           const std::string& data_scheme = "auto", const std::string& output_path = "",
                           bool progress = false);

struct NerPredictOptions {
  std::string input_format = "raw";  // raw | conll | tokens
  /// jsonl | conll (TOKEN<TAB>TAG, a blank line after each sentence; a blank
  /// input line stays one) | inline (one line per input line: raw text as
  /// written with "[TYPE ...]" around each entity; tokens joined otherwise)
  std::string format = "jsonl";
  std::string tag_scheme;        // tags shown in: bio | iobes (empty: the model's)
  ConllOptions conll{0, -1, false};
  int64_t batch_size = 32;
  std::string error_prefix;      // put before each bad input's message (the command's name)
  bool progress = false;         // lines done and lines/s on stderr when it is a terminal
};

/// The JSON record `predict --format jsonl` writes for each of `texts` (one
/// input line each, read as options.input_format: raw or tokens), less its
/// "file" and "line": {"text", "entities": [{"type", "text", "start", "end",
/// "token_start", "token_end", "sentence", "confidence"}], "sentences"}.
/// Tagged together in batches; a text's record does not depend on the others.
std::vector<nlohmann::json> ner_records(NerModel& model, const std::vector<std::string>& texts,
                                        const NerPredictOptions& options);

/// Tags each input ("-" is standard input) and writes to `out`. Unreadable
/// inputs are reported on `err` and skipped; returns 2 if any failed.
int predict_ner(NerModel& model, const std::vector<std::string>& inputs, const NerPredictOptions& options,
                std::ostream& out, std::ostream& err);

}  // namespace cellstate
