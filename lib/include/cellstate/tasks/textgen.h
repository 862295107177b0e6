#pragma once
// cellstate-textgen's library side: a recurrent language model trained by
// truncated backpropagation through time over contiguous streams, evaluated
// in nats and bits per character, and generating text token by token.
//
// Text is modelled line by line: each line is tokenised by SentencePiece and
// followed by a line-break token (a control symbol "<nl>" that no text can
// produce), and the whole text starts with bos. So the model also predicts
// where lines end, and every character of the text, line breaks included,
// is accounted for in nats per character.

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cellstate/models/language_model.h"
#include "cellstate/tasks/options.h"
#include "cellstate/decode/sampling.h"
#include "cellstate/data/tokenizer.h"
#include "cellstate/train/trainer.h"

namespace cellstate {

/// AWD-LSTM's regularisers (Merity, Keskar & Socher 2017), train options of
/// the language model; all off by default (the paper's values in --help).
/// The dropouts are LanguageModelOptions'; AR and TAR add to the loss:
///   AR  = α · mean(d_T²)            d: last layer's outputs after dropout
///   TAR = β · mean((h_{t+1} − h_t)²) h: the same before dropout
struct LmRegularization {
  std::optional<double> embed_dropout;   // on the embeddings (unset: --dropout)
  std::optional<double> hidden_dropout;  // between layers (unset: --dropout)
  bool locked_dropout = false;           // one mask per sequence, shared over time
  double vocabulary_dropout = 0;         // whole tokens dropped from the embedding matrix
  double weight_dropout = 0;             // DropConnect on weight_hh
  double ar = 0;                         // α, activation regularisation
  double tar = 0;                        // β, temporal activation regularisation

  /// config.json's "regularization" object, and back (absent keys: off).
  nlohmann::json to_json() const;
  void from_json(const nlohmann::json& j, const std::string& file);
  /// The regularisers a model's config.json records (all off when it has none).
  static LmRegularization of_config(const nlohmann::json& config, const std::string& file);
};

struct TextgenTrainConfig {
  ModelOptions model;
  TrainingOptions training;
  RuntimeOptions runtime;
  std::string train_path;
  std::string valid_path;              // empty: the last valid_fraction of the training text
  double valid_fraction = 0.1;         // share of the training text's characters held out (whole lines)
  int64_t vocab_size = 2000;           // SentencePiece vocabulary
  std::string spm_type = "unigram";    // unigram | bpe | char | word
  std::string spm_normalization = "identity";  // keeps the text as written (case, punctuation)
  int64_t bptt = 64;                   // tokens per truncated-BPTT segment
  bool tie = false;                    // decoder weight = embeddings
  bool half = false;                   // store weights as float16
  LmRegularization regularization;
};

/// Trains, writing the model directory; prints progress unless quiet.
TrainResult train_textgen(const TextgenTrainConfig& config, const ProcessGroup& group = {});

/// The train options a fine-tuning run (--init-from `init_from`) takes from
/// that model (tasks/finetune.h): its architecture and tokenizer fixed, its
/// --bptt as a default.
InheritedOptions textgen_inherited_options(const std::string& init_from);

/// The token stream of a text: each line's pieces followed by the line-break
/// id (the last line gets one only if `final_newline`). No bos.
std::vector<int64_t> encode_stream(const Tokenizer& tokenizer, int64_t newline_id, const std::string& text,
                                   bool final_newline);

/// What an evaluation over a text measured. The loss is summed over every
/// token after bos; characters are the text's code points, line breaks
/// included.
struct LmEvaluation {
  int64_t tokens = 0;
  int64_t characters = 0;
  double nats = 0;  // total negative log-likelihood
  double loss_per_token() const;
  double perplexity() const;
  double nats_per_char() const;
  double bits_per_char() const;
  nlohmann::json to_json() const;
};

/// Negative log-likelihood of `ids` (ids[0] is the context, usually bos),
/// one stream with the state carried across segments of `segment` tokens.
LmEvaluation evaluate_stream(LanguageModel& model, const std::vector<int64_t>& ids, int64_t characters,
                             int64_t segment = 256, const std::function<void(int64_t)>& progress = {});

/// A trained language model, ready to evaluate and generate.
class TextgenModel {
 public:
  /// Loads DIR; `impl` overrides the implementation it was trained with.
  static TextgenModel load(const std::string& dir, std::optional<Implementation> impl = {}, bool verify = true);

  const Tokenizer& tokenizer() const { return tokenizer_; }
  const nlohmann::json& config() const { return config_; }
  LanguageModel& model() { return model_; }
  int64_t newline_id() const { return newline_id_; }

  /// The text a generated token shows: "\n" for the line break; a piece's
  /// text with "▁" as a space, except the leading one at the start of a line.
  std::string token_text(int64_t id, bool line_start) const;

 private:
  TextgenModel(nlohmann::json config, Tokenizer tokenizer, LanguageModel model, int64_t newline_id);
  nlohmann::json config_;
  Tokenizer tokenizer_;
  LanguageModel model_;
  int64_t newline_id_;
};

/// Evaluates over a whole text file (bos, then every line, state carried),
/// or with `tail_fraction` > 0 over its last part only, cut where train's
/// --valid-fraction cuts (the first line start after 1 - fraction of it).
LmEvaluation evaluate_textgen(TextgenModel& model, const std::string& path, double tail_fraction = 0,
                              bool progress = false);

struct GenerateOptions {
  SamplingOptions sampling;
  int64_t max_tokens = 200;           // tokens generated at most
  std::vector<std::string> stop;      // generation ends where one of these appears (it is not output)
  int64_t max_prompt_tokens = 4096;   // longer prompts keep their last tokens (with a warning)
};

/// One generated continuation.
struct Generation {
  std::string text;                   // what was output (the continuation, without the prompt)
  std::vector<int64_t> ids;           // generated token ids
  std::vector<std::string> tokens;    // their texts
  std::vector<double> logprobs;       // the model's log-probability of each (before temperature and filters)
  std::string stop_reason;            // "max-tokens", "stop" (a stop string) or "eos"
  int64_t prompt_tokens = 0;          // tokens the model read before generating (bos included)
  int64_t unknown_characters = 0;     // prompt characters the vocabulary lacks (read as unk)
  bool prompt_truncated = false;
  double first_token_ms = 0;          // from the call until the first token was chosen
  double total_ms = 0;
};

/// Generates a continuation of `prompt` with sampling seed `seed`. Text is
/// passed to `on_text` as soon as it is final (text that could still become
/// a stop string is held back until it cannot).
Generation generate_text(TextgenModel& model, const std::string& prompt, const GenerateOptions& options,
                         uint64_t seed, const std::function<void(const std::string&)>& on_text = {});

/// The JSON record `generate --format jsonl` writes for one sample:
/// {"prompt", "sample", "seed", "text", "tokens", "ids", "logprobs",
/// "stop_reason", "prompt_tokens"}.
nlohmann::json generation_json(const std::string& prompt, int64_t sample, uint64_t seed, const Generation& g);

/// Training throughput of a language model on a token stream, measured the
/// way train runs it (streams of `batch_size`, bptt segments with the state
/// carried, cross-entropy, backward, clipping, the optimiser's step).
struct LmTrainBench {
  int64_t steps = 0;
  int64_t tokens = 0;
  double seconds = 0;
  double tokens_per_s = 0;
  double final_loss = 0;
};
LmTrainBench benchmark_lm_training(const std::vector<int64_t>& ids, const LanguageModelOptions& options,
                                   const TrainingOptions& training, int64_t bptt, int64_t steps, int64_t warmup);

}  // namespace cellstate
