#include "cellstate/tasks/textgen.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cellstate/decode/stop_strings.h"
#include "cellstate/nn/loss.h"
#include "cellstate/tasks/finetune.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/util/interrupt.h"
#include "cellstate/tasks/task.h"
#include "cellstate/train/optimizers.h"
#include "cellstate/train/schedule.h"
#include "cellstate/util/io.h"
#include "cellstate/util/progress.h"
#include "cellstate/util/random.h"
#include "cellstate/util/text.h"
#include "cellstate/util/timing.h"

namespace cellstate {

namespace {

constexpr const char* kTask = "textgen";
constexpr const char* kNewline = "<nl>";
const std::string kSpaceMark = "\xE2\x96\x81";  // "▁", SentencePiece's word-start mark

// A text file's contents with "\r\n" read as "\n"; empty input is an error.
std::string read_corpus(const std::string& path) {
  std::string text = read_text_file(path);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i)
    if (!(text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n')) out += text[i];
  if (out.find_first_not_of(" \t\n") == std::string::npos)
    throw InputError(path, 0, "empty input, expected text");
  return out;
}

// Where the last `fraction` of a text starts: the first line start at or
// after (1 - fraction) of its bytes.
size_t tail_start(const std::string& text, double fraction, const std::string& path) {
  const auto target = static_cast<size_t>(static_cast<double>(text.size()) * (1.0 - fraction));
  const size_t cut = text.find('\n', target);
  if (cut == std::string::npos || cut + 1 >= text.size() || cut == 0)
    throw InputError(path, 0,
                     "too short to hold out the last " + format_fixed(100 * fraction, 1) + "% of it on whole lines");
  return cut + 1;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

RecurrentState detached(const RecurrentState& s) {
  return {s.h.defined() ? s.h.detach() : torch::Tensor(), s.c.defined() ? s.c.detach() : torch::Tensor()};
}

LanguageModelOptions lm_options(const nlohmann::json& config, const std::string& file, Implementation impl) {
  ModelOptions m;
  m.from_json(config_get<nlohmann::json>(config, "model", file), file);
  LanguageModelOptions o(config_get_in(config, "vocab_size", file, int64_t{4}, int64_t{10000000}));
  o.embed(m.embed).hidden(m.hidden).layers(m.layers).kind(m.kind()).impl(impl).dropout(m.dropout);
  o.tie(config_get<bool>(config, "tie", file));
  const auto r = LmRegularization::of_config(config, file);
  auto optional = [](const std::optional<double>& v) { return v ? c10::optional<double>(*v) : c10::nullopt; };
  o.embed_dropout(optional(r.embed_dropout)).hidden_dropout(optional(r.hidden_dropout));
  o.locked_dropout(r.locked_dropout);
  o.vocabulary_dropout(r.vocabulary_dropout).weight_dropout(r.weight_dropout);
  return o;
}

/// `batch` contiguous streams of ids[offset:]: [length + 1, batch] with
/// streams[t][b] = ids[offset + b * length + t] (inputs are rows 0..length-1,
/// targets rows 1..length).
torch::Tensor make_streams(const std::vector<int64_t>& ids, int64_t offset, int64_t batch) {
  const int64_t length = (static_cast<int64_t>(ids.size()) - offset - 1) / batch;
  TORCH_CHECK(length >= 1, "the training text (", ids.size(), " tokens) is too short for --batch-size ", batch);
  auto all = torch::tensor(std::vector<int64_t>(ids.begin() + offset, ids.end()), torch::kInt64);
  auto idx = torch::arange(length + 1).unsqueeze(1) + torch::arange(batch).unsqueeze(0) * length;
  return all.index_select(0, idx.reshape(-1)).reshape({length + 1, batch});
}

/// What one truncated-BPTT step's forward pass gives.
struct BpttStep {
  torch::Tensor loss;       // mean cross-entropy per token
  torch::Tensor objective;  // what is back-propagated: the loss plus AR and TAR
  RecurrentState next;      // the state after the segment, detached
};

/// One truncated-BPTT step's forward pass on rows [t0, t0 + len) of
/// `streams`, from `state`, with the activation regularisers of `r`.
BpttStep bptt_step(LanguageModel& model, const torch::Tensor& streams, int64_t t0, int64_t len,
                   const RecurrentState& state, const LmRegularization& r = {}) {
  auto x = streams.slice(0, t0, t0 + len);
  auto y = streams.slice(0, t0 + 1, t0 + len + 1);
  auto out = model->forward_outputs(x, state);
  auto loss = smoothed_cross_entropy(out.logits.reshape({-1, out.logits.size(2)}), y.reshape(-1));
  auto objective = loss;
  if (r.ar > 0) objective = objective + r.ar * out.dropped.pow(2).mean();
  if (r.tar > 0 && len > 1) objective = objective + r.tar * (out.hidden.slice(0, 1) - out.hidden.slice(0, 0, -1)).pow(2).mean();
  return {loss, objective, detached(out.state)};
}

/// Truncated BPTT over `batch` contiguous streams of the training tokens.
/// Data-parallel: each rank carries its shard of the streams (their hidden
/// states are gathered for checkpoints).
class TextgenTask : public TrainTask {
 public:
  TextgenTask(const TextgenTrainConfig& config, LanguageModel model, std::vector<int64_t> train_ids,
              std::vector<int64_t> valid_ids, int64_t valid_chars, std::string weights_path, ProcessGroup group)
      : config_(config), model_(std::move(model)), ids_(std::move(train_ids)), valid_ids_(std::move(valid_ids)),
        valid_chars_(valid_chars), weights_path_(std::move(weights_path)), group_(std::move(group)) {}

  torch::nn::Module& module() override { return *model_; }

  int64_t begin_epoch(int64_t epoch) override {
    const int64_t bptt = config_.bptt;
    const int64_t batch = config_.training.batch_size;
    // Each epoch after the first starts the streams at another offset, so
    // segments do not always break at the same tokens.
    const int64_t offset =
        epoch == 0 ? 0
                   : static_cast<int64_t>(DataRng(mix64(config_.training.seed * 1000003 + static_cast<uint64_t>(epoch)))
                                              .below(static_cast<uint64_t>(bptt)));
    streams_ = make_streams(ids_, offset, batch);
    streams_total_ = streams_.size(1);
    streams_ = shard_rows(streams_, 1, group_).contiguous();
    length_ = streams_.size(0) - 1;
    state_ = {};
    return (length_ + bptt - 1) / bptt;
  }

  StepResult train_step(int64_t index) override {
    const int64_t t0 = index * config_.bptt;
    const int64_t len = std::min(config_.bptt, length_ - t0);
    // Each rank's mean over its streams, weighted by its share of them.
    const double share = static_cast<double>(streams_.size(1)) / static_cast<double>(streams_total_);
    auto step = bptt_step(model_, streams_, t0, len, state_, config_.regularization);
    state_ = std::move(step.next);
    return {step.loss.item<double>() * share, len * streams_.size(1),
            share == 1.0 ? step.objective : step.objective * share};
  }

  Evaluation evaluate() override {
    const auto e = evaluate_stream(model_, valid_ids_, valid_chars_, 512);
    return {e.nats_per_char(), e.to_json()};
  }

  void save_best() override { save_weights(*model_, weights_path_, config_.half); }

  void save_state(torch::serialize::OutputArchive& archive) override {
    const bool has = state_.h.defined();  // alike on every rank (undefined at an epoch's start)
    archive.write("has_state", torch::tensor(static_cast<int64_t>(has)));
    archive.write("h", has ? gather_rows(state_.h, 1, streams_total_, group_) : torch::zeros({1}));
    archive.write("c", has && state_.c.defined() ? gather_rows(state_.c, 1, streams_total_, group_) : torch::zeros({1}));
  }
  void load_state(torch::serialize::InputArchive& archive) override {
    torch::Tensor has, h, c;
    archive.read("has_state", has);
    archive.read("h", h);
    archive.read("c", c);
    state_ = {};
    if (has.item<int64_t>()) {
      if (h.dim() != 3 || h.size(1) != streams_total_)
        throw std::runtime_error("the checkpoint's hidden state has " + std::to_string(h.dim() == 3 ? h.size(1) : 0) +
                                 " streams, --batch-size " + std::to_string(streams_total_));
      state_.h = shard_rows(h, 1, group_).contiguous();
      if (config_.model.kind() == RecurrentKind::kLSTM) state_.c = shard_rows(c, 1, group_).contiguous();
    }
  }

 private:
  const TextgenTrainConfig& config_;
  LanguageModel model_;
  std::vector<int64_t> ids_;
  std::vector<int64_t> valid_ids_;
  int64_t valid_chars_;
  std::string weights_path_;
  ProcessGroup group_;
  torch::Tensor streams_;       // this rank's streams: [length + 1, streams]
  int64_t streams_total_ = 0;   // every rank's (--batch-size)
  int64_t length_ = 0;
  RecurrentState state_;
};

}  // namespace

// ---------------------------------------------------------------- streams

std::vector<int64_t> encode_stream(const Tokenizer& tokenizer, int64_t newline_id, const std::string& text,
                                   bool final_newline) {
  std::vector<int64_t> ids;
  const auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto piece = tokenizer.encode(lines[i]);
    ids.insert(ids.end(), piece.begin(), piece.end());
    if (i + 1 < lines.size() || final_newline) ids.push_back(newline_id);
  }
  return ids;
}

double LmEvaluation::loss_per_token() const { return tokens ? nats / static_cast<double>(tokens) : 0.0; }
double LmEvaluation::perplexity() const { return std::exp(loss_per_token()); }
double LmEvaluation::nats_per_char() const { return characters ? nats / static_cast<double>(characters) : 0.0; }
double LmEvaluation::bits_per_char() const { return nats_per_char() / std::log(2.0); }

nlohmann::json LmEvaluation::to_json() const {
  return {{"tokens", tokens},
          {"characters", characters},
          {"loss_per_token", loss_per_token()},
          {"perplexity", perplexity()},
          {"nats_per_char", nats_per_char()},
          {"bits_per_char", bits_per_char()}};
}

LmEvaluation evaluate_stream(LanguageModel& model, const std::vector<int64_t>& ids, int64_t characters,
                             int64_t segment, const std::function<void(int64_t)>& progress) {
  TORCH_CHECK(segment > 0, "evaluate_stream: segment must be positive");
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  LmEvaluation e;
  e.characters = characters;
  RecurrentState state;
  const auto n = static_cast<int64_t>(ids.size());
  auto all = torch::tensor(ids, torch::kInt64);
  for (int64_t t = 0; t + 1 < n; t += segment) {
    const int64_t len = std::min(segment, n - 1 - t);
    auto x = all.slice(0, t, t + len).unsqueeze(1);
    auto y = all.slice(0, t + 1, t + len + 1);
    auto [logits, next] = model->forward(x, state);
    state = next;
    e.nats += torch::nn::functional::cross_entropy(logits.squeeze(1), y,
                                                   torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                  .item<double>();
    e.tokens += len;
    if (progress) progress(len);
  }
  if (was_training) model->train();
  return e;
}

// ---------------------------------------------------------------- training

InheritedOptions textgen_inherited_options(const std::string& init_from) {
  const InitSource source(kTask, init_from);
  const auto& c = source.config();
  const auto file = source.config_file();
  auto o = common_inherited_options(source, true, false);
  inherit_tokenizer_options(source, o);
  o.fixed["tie"] = config_get<bool>(c, "tie", file);
  const auto t = config_get<nlohmann::json>(c, "training", file);
  o.defaults["bptt"] = config_optional(t, "bptt", file, int64_t{35});
  // The source's regularisers as defaults (the option names are the JSON keys with "-").
  const auto r = LmRegularization::of_config(c, file);
  const auto regularization = r.to_json();
  for (const auto& [key, value] : regularization.items()) {
    std::string name = key;
    std::replace(name.begin(), name.end(), '_', '-');
    o.defaults[name] = value;
  }
  return o;
}

// ---------------------------------------------------------------- regularisation

nlohmann::json LmRegularization::to_json() const {
  nlohmann::json j = {{"locked_dropout", locked_dropout},
                      {"vocabulary_dropout", vocabulary_dropout},
                      {"weight_dropout", weight_dropout},
                      {"ar", ar},
                      {"tar", tar}};
  if (embed_dropout) j["embed_dropout"] = *embed_dropout;
  if (hidden_dropout) j["hidden_dropout"] = *hidden_dropout;
  return j;
}

void LmRegularization::from_json(const nlohmann::json& j, const std::string& file) {
  if (!j.is_object()) throw_config_error(file, "\"regularization\" must be an object");
  *this = {};
  if (j.contains("embed_dropout")) embed_dropout = config_get_in(j, "embed_dropout", file, 0.0, 0.999);
  if (j.contains("hidden_dropout")) hidden_dropout = config_get_in(j, "hidden_dropout", file, 0.0, 0.999);
  locked_dropout = config_optional(j, "locked_dropout", file, false);
  auto off_unless_given = [&](const char* key, double max) {
    return j.contains(key) ? config_get_in(j, key, file, 0.0, max) : 0.0;
  };
  vocabulary_dropout = off_unless_given("vocabulary_dropout", 0.999);
  weight_dropout = off_unless_given("weight_dropout", 0.999);
  ar = off_unless_given("ar", 1e6);
  tar = off_unless_given("tar", 1e6);
}

LmRegularization LmRegularization::of_config(const nlohmann::json& config, const std::string& file) {
  LmRegularization r;
  if (config.contains("regularization")) r.from_json(config["regularization"], file);
  return r;
}

TrainResult train_textgen(const TextgenTrainConfig& config, const ProcessGroup& group) {
  const InterruptGuard interrupts;
  ModelTransaction transaction(config.model.dir, kTask, write_options(config.training), group);
  const std::string dir = transaction.path();
  const TaskLog log(config.runtime.quiet);
  std::string train_text = read_corpus(config.train_path);
  std::string valid_text;
  std::string valid_source = config.valid_path;
  if (!config.valid_path.empty()) {
    valid_text = read_corpus(config.valid_path);
  } else {
    const size_t cut = tail_start(train_text, config.valid_fraction, config.train_path);
    valid_text = train_text.substr(cut);
    train_text.resize(cut);
    valid_source = config.train_path + " (last " + format_fixed(100 * config.valid_fraction, 1) + "%)";
  }
  const int64_t train_chars = utf8_length(train_text);
  const int64_t valid_chars = utf8_length(valid_text);
  log("train: " + std::to_string(train_chars) + " characters; valid: " + std::to_string(valid_chars) +
      " characters from " + valid_source);

  interrupts.check();
  const std::string tokenizer_path = dir + "/tokenizer.model";
  TokenizerTrainOptions spm;
  spm.vocab_size = config.vocab_size;
  spm.model_type = config.spm_type;
  spm.normalization = config.spm_normalization;
  spm.control_symbols = {kNewline};
  std::vector<std::string> lines;
  for (auto& l : split_lines(train_text))
    if (!l.empty()) lines.push_back(std::move(l));
  std::optional<InitSource> source;
  if (!config.training.init_from.empty()) source.emplace(kTask, config.training.init_from);
  const Tokenizer tokenizer =
      source ? Tokenizer::load(source->copy_file("tokenizer.model", dir, group))
             : train_model_tokenizer(dir, config.training.resume, lines, spm, "tokenizer.model", group);
  const int64_t newline_id = tokenizer.piece_to_id(kNewline);
  if (newline_id == Tokenizer::kUnkId)
    throw InputError(tokenizer_path, 0, "has no line-break piece \"<nl>\" (not a textgen tokenizer)");

  std::vector<int64_t> train_ids{Tokenizer::kBosId}, valid_ids{Tokenizer::kBosId};
  {
    const auto t = encode_stream(tokenizer, newline_id, train_text, !train_text.empty() && train_text.back() == '\n');
    train_ids.insert(train_ids.end(), t.begin(), t.end());
    const auto v = encode_stream(tokenizer, newline_id, valid_text, !valid_text.empty() && valid_text.back() == '\n');
    valid_ids.insert(valid_ids.end(), v.begin(), v.end());
  }
  log("tokenizer: " + config.spm_type + ", " + std::to_string(tokenizer.vocab_size()) + " pieces; " +
      std::to_string(train_ids.size()) + " training tokens (" +
      format_fixed(static_cast<double>(train_chars) / static_cast<double>(train_ids.size()), 2) + " characters/token), " +
      std::to_string(valid_ids.size()) + " valid tokens" + (source ? " (tokenizer of " + source->dir() + ")" : ""));
  if (source)
    log(coverage_message(std::count(train_ids.begin(), train_ids.end(), Tokenizer::kUnkId),
                         static_cast<int64_t>(train_ids.size()), "training tokens", *source));

  auto json = new_model_config(kTask);
  json["model"] = config.model.to_json();
  json["tie"] = config.tie;
  json["vocab_size"] = tokenizer.vocab_size();
  json["newline_id"] = newline_id;
  json["tokenizer"] = {{"file", "tokenizer.model"}, {"type", config.spm_type}, {"vocab_size", config.vocab_size},
                       {"normalization", config.spm_normalization}};
  json["weights"] = weights_entry(config.half);
  json["training"] = training_record(config.training);
  json["training"]["bptt"] = config.bptt;
  json["regularization"] = config.regularization.to_json();
  json["data"] = {{"train", config.train_path},     {"valid", valid_source},
                  {"train_characters", train_chars}, {"valid_characters", valid_chars},
                  {"train_tokens", train_ids.size()}, {"valid_tokens", valid_ids.size()}};
  if (source) json["init_from"] = source->record();
  write_model_config(dir, json);
  interrupts.check();

  torch::manual_seed(config.training.seed);
  LanguageModel model(lm_options(json, dir + "/config.json", config.model.implementation()));
  if (source) {
    LanguageModel from(lm_options(source->config(), source->config_file(), config.model.implementation()));
    start_from(*source, *from, "weights.pt", *model);
    log("fine-tuning " + source->dir());
    // "encoder" is the token embedding (the output layer's weight too with --tie).
    const auto frozen = apply_freeze(*model, config.training.freeze, {{"encoder."}, "rnn.", config.model.layers});
    if (!frozen.empty()) log(frozen);
  }
  log("model with " + std::to_string(count_parameters(*model)) + " parameters: " + config.model.rnn + " (" + config.model.impl +
      "), " + std::to_string(config.model.layers) + " layer(s) x " + std::to_string(config.model.hidden) +
      ", embeddings " + std::to_string(config.model.embed) + (config.tie ? " (tied)" : "") + ", bptt " +
      std::to_string(config.bptt) + ", batch " + std::to_string(config.training.batch_size));
  TextgenTask task(config, model, std::move(train_ids), valid_ids, valid_chars, dir + "/weights.pt", group);

  auto t = TrainerOptions::of(config.training, dir, "nats/char", config.runtime.quiet);
  t.higher_is_better = false;
  const auto result = Trainer(t, group).fit(task);
  if (result.interrupted() || !group.main()) return result;
  if (result.already_finished && transaction.resuming_finished()) {
    log.always(already_finished_message(transaction.target(), result));
    return result;
  }

  json["results"] = training_results(result, "valid_nats_per_char");
  json["results"]["valid_bits_per_char"] = result.best_score / std::log(2.0);
  write_model_config(dir, json);
  transaction.commit();
  log("valid " + format_fixed(result.best_score, 4) + " nats/char (" + format_fixed(result.best_score / std::log(2.0), 4) +
      " bits/char) at step " + std::to_string(result.best_step) + "; model in " + transaction.target());
  return result;
}

// ---------------------------------------------------------------- loading

TextgenModel::TextgenModel(nlohmann::json config, Tokenizer tokenizer, LanguageModel model, int64_t newline_id)
    : config_(std::move(config)), tokenizer_(std::move(tokenizer)), model_(std::move(model)), newline_id_(newline_id) {}

TextgenModel TextgenModel::load(const std::string& dir, std::optional<Implementation> impl, bool verify) {
  auto config = read_model_config(dir, kTask, verify);
  const std::string file = dir + "/config.json";
  const Implementation chosen = model_implementation(config, file, impl);
  auto tokenizer = load_model_tokenizer(dir, config);
  const auto newline_id = config_get_in(config, "newline_id", file, int64_t{0}, tokenizer.vocab_size() - 1);
  if (tokenizer.id_to_piece(newline_id) != kNewline)
    throw InputError(dir + "/tokenizer.model", 0,
                     "piece " + std::to_string(newline_id) + " is not the line break \"<nl>\" config.json names");
  LanguageModel model(lm_options(config, file, chosen));
  load_weights(*model, model_file(dir, "weights.pt"), verify);
  model->eval();
  return TextgenModel(std::move(config), std::move(tokenizer), std::move(model), newline_id);
}

std::string TextgenModel::token_text(int64_t id, bool line_start) const {
  if (id == newline_id_) return "\n";
  if (id == Tokenizer::kUnkId) return "\xE2\x81\x87";  // "⁇", as SentencePiece decodes unk
  if (id == Tokenizer::kPadId || id == Tokenizer::kBosId || id == Tokenizer::kEosId) return "";
  std::string piece = tokenizer_.id_to_piece(id);
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kSpaceMark.size(), kSpaceMark) == 0) {
      if (!(line_start && out.empty() && i == 0)) out += ' ';
      i += kSpaceMark.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

LmEvaluation evaluate_textgen(TextgenModel& model, const std::string& path, double tail_fraction, bool progress) {
  std::string text = read_corpus(path);
  if (tail_fraction > 0) text.erase(0, tail_start(text, tail_fraction, path));
  std::vector<int64_t> ids{Tokenizer::kBosId};
  const auto s = encode_stream(model.tokenizer(), model.newline_id(), text, text.back() == '\n');
  ids.insert(ids.end(), s.begin(), s.end());
  CountProgress bar(!progress, "tokens", static_cast<int64_t>(ids.size()) - 1);
  return evaluate_stream(model.model(), ids, utf8_length(text), 512, [&](int64_t n) { bar.add(n); });
}

// ---------------------------------------------------------------- generation

Generation generate_text(TextgenModel& model, const std::string& prompt, const GenerateOptions& options,
                         uint64_t seed, const std::function<void(const std::string&)>& on_text) {
  const Stopwatch started;
  if (const size_t bad = find_invalid_utf8(prompt); bad != std::string::npos)
    throw InputError("prompt", 0, "invalid UTF-8 at byte " + std::to_string(bad));
  Generation g;
  auto& lm = model.model();
  lm->eval();
  std::vector<int64_t> context = encode_stream(model.tokenizer(), model.newline_id(), prompt, false);
  for (auto id : context) g.unknown_characters += id == Tokenizer::kUnkId;
  if (options.max_prompt_tokens > 0 && static_cast<int64_t>(context.size()) > options.max_prompt_tokens) {
    context.erase(context.begin(), context.end() - options.max_prompt_tokens);
    g.prompt_truncated = true;
  }
  context.insert(context.begin(), Tokenizer::kBosId);
  g.prompt_tokens = static_cast<int64_t>(context.size());

  torch::NoGradGuard no_grad;
  // The prompt in one pass, then one step at a time (the custom recurrence
  // steps in place, keeping its workspace).
  RecurrentState state;
  {
    auto ids = torch::tensor(std::vector<int64_t>(context.begin(), context.end() - 1), torch::kInt64).unsqueeze(1);
    if (ids.size(0) > 0) state = lm->forward(ids, {}).second;
  }
  LanguageModelStepper stepper(lm, state);
  torch::Tensor logits = stepper.logits(torch::tensor({context.back()}, torch::kInt64), nullptr)[0];
  Sampler sampler(options.sampling, seed);
  const std::vector<int64_t> banned{Tokenizer::kPadId, Tokenizer::kBosId};
  std::vector<int64_t> seen(context.begin() + 1, context.end());
  StopFilter filter(options.stop, on_text);
  bool line_start = context.back() == model.newline_id() || context.back() == Tokenizer::kBosId;
  g.stop_reason = "max-tokens";
  for (int64_t n = 0; n < options.max_tokens; ++n) {
    const int64_t id = sampler.next(logits, seen, banned);
    if (n == 0) g.first_token_ms = started.ms();
    const double logprob = torch::log_softmax(logits.to(torch::kFloat64), 0)[id].item<double>();
    if (id == Tokenizer::kEosId) {
      g.stop_reason = "eos";
      break;
    }
    const std::string text = model.token_text(id, line_start);
    line_start = id == model.newline_id();
    g.ids.push_back(id);
    g.tokens.push_back(text);
    g.logprobs.push_back(logprob);
    seen.push_back(id);
    if (filter.add(text)) {
      g.stop_reason = "stop";
      break;
    }
    if (n + 1 < options.max_tokens) logits = stepper.logits(torch::tensor({id}, torch::kInt64), nullptr)[0];
  }
  if (g.stop_reason != "stop") filter.flush();
  g.text = filter.emitted();
  g.total_ms = started.ms();
  return g;
}

// ---------------------------------------------------------------- benchmark

LmTrainBench benchmark_lm_training(const std::vector<int64_t>& ids, const LanguageModelOptions& options,
                                   const TrainingOptions& training, int64_t bptt, int64_t steps, int64_t warmup) {
  TORCH_CHECK(bptt > 0 && steps > 0 && warmup >= 0, "benchmark_lm_training: bptt and steps must be positive");
  torch::manual_seed(training.seed);
  LanguageModel model(options);
  model->train();
  auto parameters = model->parameters();
  auto optimizer = make_optimizer(parameters, training);
  const auto streams = make_streams(ids, 0, training.batch_size);
  const int64_t length = streams.size(0) - 1;
  RecurrentState state;
  int64_t t0 = 0;
  LmTrainBench r;
  Stopwatch watch;
  for (int64_t i = 0; i < warmup + steps; ++i) {
    if (i == warmup) watch.restart();
    if (t0 + bptt > length) {  // wrap around: a new epoch
      t0 = 0;
      state = {};
    }
    optimizer->zero_grad();
    auto step = bptt_step(model, streams, t0, bptt, state);
    step.objective.backward();
    const auto loss = step.loss;
    state = std::move(step.next);
    if (training.clip > 0) clip_gradient_norm(parameters, training.clip);
    optimizer->step();
    t0 += bptt;
    if (i >= warmup) r.final_loss = loss.item<double>();
  }
  const double seconds = watch.seconds();
  r.steps = steps;
  r.tokens = steps * bptt * training.batch_size;
  r.seconds = seconds;
  r.tokens_per_s = static_cast<double>(r.tokens) / seconds;
  return r;
}

nlohmann::json generation_json(const std::string& prompt, int64_t sample, uint64_t seed, const Generation& g) {
  nlohmann::json logprobs = nlohmann::json::array();
  for (double l : g.logprobs) logprobs.push_back(std::round(l * 1e4) / 1e4);
  return {{"prompt", prompt},       {"sample", sample}, {"seed", seed},
          {"text", g.text},         {"tokens", g.tokens}, {"ids", g.ids},
          {"logprobs", logprobs},   {"stop_reason", g.stop_reason},
          {"prompt_tokens", g.prompt_tokens}};
}

}  // namespace cellstate
