#pragma once
// cellstate-sentiment's library side: training a TextClassifier on labelled
// text, loading it, evaluating it, and predicting over files.

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cellstate/data/readers.h"
#include "cellstate/data/tokenizer.h"
#include "cellstate/eval/metrics.h"
#include "cellstate/models/classifier.h"
#include "cellstate/tasks/options.h"
#include "cellstate/train/trainer.h"

namespace cellstate {

struct SentimentTrainConfig {
  ModelOptions model;
  TrainingOptions training;
  RuntimeOptions runtime;
  std::string train_path;
  std::string dev_path;
  std::string format = "auto";       // auto | tsv | sst | dir
  int64_t vocab_size = 8000;         // SentencePiece vocabulary
  std::string spm_type = "unigram";  // unigram | bpe | char | word
  std::string spm_normalization = "nmt_nfkc_cf";  // SentencePiece rule; _cf folds case
  std::string pooling = "max";       // last | max | mean | attention
  double embed_dropout = 0.2;
  double word_dropout = 0.0;
  double lm_weight = 0.0;            // auxiliary language-model loss (see TextClassifierOptions)
  double sample_alpha = 0.0;         // > 0: subword regularisation while training
  int64_t sample_nbest = 64;
  int64_t max_length = 256;          // tokens kept per text (longer ones are truncated)
  bool half = false;                 // store weights as float16
  std::string label_names;           // "0=negative,1=positive": names for the data's labels
  std::string teacher;               // model directory whose probabilities label augmented spans
  int64_t augment_spans = 0;         // random spans per training text, labelled by the teacher
  int64_t ensemble = 1;              // members trained with seeds seed, seed+1, ...; probabilities averaged
};

/// "A=x,B=y" -> {A: x, B: y}; data labels are renamed on reading (and again
/// by eval, through config.json's "label_aliases").
std::map<std::string, std::string> parse_label_names(const std::string& spec);

/// Weights file of ensemble member k: weights.pt, weights.1.pt, ...
std::string sentiment_weights_name(int64_t member);

/// Trains, writing the model directory; prints progress unless quiet.
TrainResult train_sentiment(const SentimentTrainConfig& config, const ProcessGroup& group = {});

/// The train options a fine-tuning run (--init-from `init_from`) takes from
/// that model (tasks/finetune.h): its architecture and tokenizer fixed, its
/// regularisation, label names and ensemble size as defaults.
InheritedOptions sentiment_inherited_options(const std::string& init_from);

/// A trained classifier, ready to predict.
class SentimentModel {
 public:
  /// Loads DIR; `impl` overrides the implementation the model was trained with;
  /// `verify` checks its files against MANIFEST.json first.
  static SentimentModel load(const std::string& dir, std::optional<Implementation> impl = {}, bool verify = true);

  const LabelSet& labels() const { return labels_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const nlohmann::json& config() const { return config_; }
  /// Ensemble members (one for a plain model); predictions average them.
  std::vector<TextClassifier>& members() { return members_; }

  /// Token ids of a text, truncated to the model's max length; never empty.
  std::vector<int64_t> encode(const std::string& text) const;
  /// Class probabilities [N, C] for the texts, in order (batched by length);
  /// `progress` (if set) hears the number of texts of each batch done.
  torch::Tensor probabilities(const std::vector<std::string>& texts, int64_t batch_size = 64,
                              const std::function<void(int64_t)>& progress = {});
  torch::Tensor probabilities_of_ids(const std::vector<std::vector<int64_t>>& ids, int64_t batch_size = 64,
                                     const std::function<void(int64_t)>& progress = {});

 private:
  SentimentModel(nlohmann::json config, Tokenizer tokenizer, LabelSet labels,
                 std::vector<TextClassifier> members);
  nlohmann::json config_;
  Tokenizer tokenizer_;
  LabelSet labels_;
  std::vector<TextClassifier> members_;
  int64_t max_length_;
};

/// Evaluates on labelled data (labels must be among the model's).
/// `progress`: a progress bar on stderr when it is a terminal.
ClassificationReport evaluate_sentiment(SentimentModel& model, const std::string& path,
                                        const std::string& format = "auto", bool progress = false);

struct PredictOptions {
  std::string unit = "line";    // line | file
  std::string format = "tsv";   // tsv | jsonl
  int64_t top_k = 1;            // labels shown per result
  double threshold = 0.0;       // best probability below this: label "?"
  int64_t batch_size = 64;      // lines per batch when streaming
  std::string error_prefix;     // put before each bad input's message (the command's name)
  bool progress = false;        // lines done and lines/s on stderr when it is a terminal
};

/// The JSON record `predict --format jsonl` writes for each of `texts`, less
/// its "file" and "line": {"text", "label", "probability", "probabilities"},
/// or {"empty": true} for a blank text. Scored in batches of
/// options.batch_size; a text's record does not depend on the others.
std::vector<nlohmann::json> sentiment_records(SentimentModel& model, const std::vector<std::string>& texts,
                                              const PredictOptions& options);

/// Predicts over each input ("-" is standard input) and writes results to
/// `out`. An unreadable input is reported on `err` and skipped; returns 2
/// if any input failed, else 0.
int predict_sentiment(SentimentModel& model, const std::vector<std::string>& inputs,
                      const PredictOptions& options, std::ostream& out, std::ostream& err);

struct SentimentBench {
  int64_t sentences = 0;
  double sentences_per_s = 0;    // batched, tokenisation included (median of repeats)
  double latency_ms_median = 0;  // one sentence at a time
  double latency_ms_p90 = 0;
};

/// Times predict's work (tokenise, batch, forward, softmax) over `texts`.
SentimentBench benchmark_sentiment(SentimentModel& model, const std::vector<std::string>& texts,
                                   int64_t batch_size, int repeat);

}  // namespace cellstate
