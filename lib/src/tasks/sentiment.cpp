#include "cellstate/tasks/sentiment.h"

#include <torch/torch.h>

#include <filesystem>
#include <sstream>

#include "cellstate/data/batching.h"
#include "cellstate/data/word_split.h"
#include "cellstate/tasks/finetune.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/util/interrupt.h"
#include "cellstate/tasks/predict.h"
#include "cellstate/tasks/task.h"
#include "cellstate/util/io.h"
#include "cellstate/util/progress.h"
#include "cellstate/util/random.h"
#include "cellstate/util/text.h"
#include "cellstate/util/timing.h"

namespace cellstate {

namespace {

constexpr const char* kTask = "sentiment";

// The segmentation seed of text `i` in epoch `epoch` (subword regularisation).
uint64_t segmentation_seed(uint64_t seed, int64_t epoch, size_t i) {
  constexpr uint64_t kStream = 0x632BE59BD9B4E019ull;  // the sentiment task's streams
  return derive_seed(derive_seed(seed, static_cast<uint64_t>(epoch) + kStream), i + kStream);
}

// Token ids as every classifier input gets them: never empty, at most max_length.
std::vector<int64_t> finish_ids(std::vector<int64_t> ids, int64_t max_length, int64_t* truncated = nullptr) {
  if (ids.empty()) ids.push_back(Tokenizer::kUnkId);
  const bool cut = truncate(ids, max_length);
  if (truncated) *truncated += cut;
  return ids;
}

// Padded batch and labels of the examples `idx`.
std::pair<PaddedBatch, std::vector<int64_t>> gather(const std::vector<int64_t>& idx,
                                                    const std::vector<std::vector<int64_t>>& ids,
                                                    const std::vector<int64_t>& labels) {
  std::vector<std::vector<int64_t>> seqs;
  std::vector<int64_t> y;
  for (auto i : idx) {
    seqs.push_back(ids[static_cast<size_t>(i)]);
    y.push_back(labels[static_cast<size_t>(i)]);
  }
  return {pad_batch(seqs), std::move(y)};
}

TextClassifierOptions classifier_options(const nlohmann::json& config, const std::string& file,
                                         Implementation impl) {
  ModelOptions m;
  m.from_json(config_get<nlohmann::json>(config, "model", file), file);
  const auto c = config_get<nlohmann::json>(config, "classifier", file);
  TextClassifierOptions o(config_get_in(config, "vocab_size", file, int64_t{1}, int64_t{10000000}),
                          static_cast<int64_t>(config_get<std::vector<std::string>>(config, "labels", file).size()));
  o.embed(m.embed).hidden(m.hidden).layers(m.layers).bidirectional(m.bidirectional).kind(m.kind()).impl(impl);
  o.dropout(m.dropout);
  try {
    o.pooling(parse_pooling(config_get<std::string>(c, "pooling", file)));
  } catch (const std::invalid_argument& e) {
    throw_config_error(file, e.what());
  }
  o.embed_dropout(config_get_in(c, "embed_dropout", file, 0.0, 0.99));
  o.word_dropout(config_get_in(c, "word_dropout", file, 0.0, 0.99));
  o.lm_weight(c.contains("lm_weight") ? config_get_in(c, "lm_weight", file, 0.0, 100.0) : 0.0);
  return o;
}

/// Training for the Trainer: batches by length, cross-entropy.
class SentimentTask : public TrainTask {
 public:
  SentimentTask(const SentimentTrainConfig& config, TextClassifier model, const Tokenizer& tokenizer,
                std::vector<std::string> train_texts, std::vector<int64_t> train_labels,
                std::vector<std::vector<int64_t>> dev_ids, std::vector<int64_t> dev_labels,
                const std::vector<std::string>& label_names, std::string weights_path, ProcessGroup group,
                torch::Tensor soft_targets = {})
      : config_(config), model_(std::move(model)), tokenizer_(tokenizer), texts_(std::move(train_texts)),
        labels_(std::move(train_labels)), dev_ids_(std::move(dev_ids)), dev_labels_(std::move(dev_labels)),
        label_names_(label_names), weights_path_(std::move(weights_path)), group_(std::move(group)),
        soft_targets_(std::move(soft_targets)),
        // The soft-target examples are the last ones.
        first_soft_(labels_.size() - static_cast<size_t>(soft_targets_.defined() ? soft_targets_.size(0) : 0)) {
    for (const auto& t : texts_) ids_.push_back(finish_ids(tokenizer_.encode(t), config_.max_length, &truncated_));
  }

  int64_t truncated() const { return truncated_; }
  torch::nn::Module& module() override { return *model_; }

  int64_t begin_epoch(int64_t epoch) override {
    if (config_.sample_alpha > 0) {
      // A fresh segmentation of every text, drawn from (seed, epoch, index).
      for (size_t i = 0; i < texts_.size(); ++i) {
        ids_[i] = finish_ids(tokenizer_.sample_encode(texts_[i], config_.sample_alpha,
                                                      segmentation_seed(config_.training.seed, epoch, i),
                                                      static_cast<int>(config_.sample_nbest)),
                             config_.max_length);
      }
    }
    std::vector<int64_t> lengths;
    for (const auto& s : ids_) lengths.push_back(static_cast<int64_t>(s.size()));
    BucketOptions b;
    b.batch_size = config_.training.batch_size;
    b.chunk_batches = 20;
    batches_ = bucket_batches(lengths, b, config_.training.seed, epoch);
    return static_cast<int64_t>(batches_.size());
  }

  StepResult train_step(int64_t index) override {
    // This rank's shard of the batch (all of it in one process); its losses
    // are weighted by its share of the batch's examples (classification) and
    // of its predicted tokens (--lm-weight), so the ranks' sum is the batch's mean.
    const auto& all = batches_[static_cast<size_t>(index)];
    const auto part = shard_range(static_cast<int64_t>(all.size()), group_.rank(), group_.size());
    const std::vector<int64_t> idx(all.begin() + part.begin, all.begin() + part.end);
    if (idx.empty()) return {};  // nothing of this batch on this rank
    const double share = static_cast<double>(idx.size()) / static_cast<double>(all.size());
    const auto [batch, y] = gather(idx, ids_, labels_);
    auto [logits, lm_loss] = model_->forward_with_lm(batch.ids, batch.lengths);
    torch::Tensor loss;
    if (soft_targets_.defined()) {
      // Distillation: examples past the labelled ones learn the teacher's probabilities.
      auto targets = torch::zeros({static_cast<int64_t>(idx.size()), logits.size(1)});
      for (size_t k = 0; k < idx.size(); ++k) {
        const auto i = static_cast<size_t>(idx[k]);
        if (labels_[i] >= 0) targets[static_cast<int64_t>(k)][labels_[i]] = 1.0;
        else targets[static_cast<int64_t>(k)] = soft_targets_[static_cast<int64_t>(i - first_soft_)];
      }
      loss = -(targets * torch::log_softmax(logits, 1)).sum(1).mean();
    } else {
      loss = torch::nn::functional::cross_entropy(logits, torch::tensor(y, torch::kInt64));
    }
    torch::Tensor objective;
    if (config_.lm_weight > 0) {
      // The language-model loss is a mean over positions 1..length-1 of each text.
      auto predicted = [&](const std::vector<int64_t>& rows) {
        int64_t n = 0;
        for (auto i : rows) n += std::max<int64_t>(0, static_cast<int64_t>(ids_[static_cast<size_t>(i)].size()) - 1);
        return n;
      };
      const int64_t batch_predicted = predicted(all);
      const double lm_share =
          batch_predicted ? static_cast<double>(predicted(idx)) / static_cast<double>(batch_predicted) : 0.0;
      objective = share == 1.0 ? loss + config_.lm_weight * lm_loss
                               : share * loss + (config_.lm_weight * lm_share) * lm_loss;
    } else {
      objective = share == 1.0 ? loss : share * loss;
    }
    return {loss.item<double>() * share, batch.lengths.sum().item<int64_t>(), objective};
  }

  Evaluation evaluate() override {
    std::vector<int64_t> lengths;
    for (const auto& s : dev_ids_) lengths.push_back(static_cast<int64_t>(s.size()));
    std::vector<int64_t> predicted(dev_ids_.size());
    double loss = 0;
    for (const auto& b : sorted_batches(lengths, 128)) {
      const auto [batch, y] = gather(b, dev_ids_, dev_labels_);
      auto logits = model_->forward(batch.ids, batch.lengths);
      loss += torch::nn::functional::cross_entropy(
                  logits, torch::tensor(y, torch::kInt64),
                  torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                  .item<double>();
      auto pred = logits.argmax(1);
      for (size_t k = 0; k < b.size(); ++k) predicted[static_cast<size_t>(b[k])] = pred[static_cast<int64_t>(k)].item<int64_t>();
    }
    const auto report = classification_report(dev_labels_, predicted, label_names_);
    nlohmann::json metrics = {{"accuracy", report.accuracy},
                              {"macro_f1", report.macro_f1},
                              {"loss", loss / static_cast<double>(dev_ids_.size())}};
    return {report.accuracy, metrics};
  }

  void save_best() override { save_weights(*model_, weights_path_, config_.half); }

 private:
  const SentimentTrainConfig& config_;
  TextClassifier model_;
  const Tokenizer& tokenizer_;
  std::vector<std::string> texts_;
  std::vector<int64_t> labels_;
  std::vector<std::vector<int64_t>> ids_;
  std::vector<std::vector<int64_t>> dev_ids_;
  std::vector<int64_t> dev_labels_;
  std::vector<std::string> label_names_;
  std::string weights_path_;
  ProcessGroup group_;
  torch::Tensor soft_targets_;  // teacher probabilities of the examples from first_soft_ on
  size_t first_soft_;
  std::vector<std::vector<int64_t>> batches_;
  int64_t truncated_ = 0;
};

}  // namespace

namespace {

/// The labelled data of a run, labels renamed by --label-names.
struct SentimentData {
  std::vector<std::string> texts;  // training texts (distillation spans appended later)
  std::vector<int64_t> train_y;    // label ids; -1 for a span the teacher labels
  std::vector<std::string> dev_texts;
  std::vector<int64_t> dev_y;
  LabelSet labels;
  std::map<std::string, std::string> aliases;
  size_t train_examples = 0, dev_examples = 0;
};

SentimentData read_sentiment_data(const SentimentTrainConfig& config, const TaskLog& log,
                                  const std::vector<std::string>& known_labels = {}) {
  const auto format = parse_classification_format(config.format);
  ReadStats train_stats, dev_stats;
  SentimentData d;
  d.aliases = parse_label_names(config.label_names);
  auto train = read_classification(config.train_path, format, &train_stats);
  auto dev = read_classification(config.dev_path, format, &dev_stats);
  for (auto* set : {&train, &dev})
    for (auto& ex : *set)
      if (const auto it = d.aliases.find(ex.label); it != d.aliases.end()) ex.label = it->second;
  {
    // A fine-tuned model keeps its source's labels and adds the data's new ones.
    std::vector<std::string> names = known_labels;
    for (const auto& ex : train) names.push_back(ex.label);
    d.labels = LabelSet(std::move(names));
  }
  if (d.labels.size() < 2)
    throw InputError(config.train_path, 0,
                     "expected at least 2 distinct labels, found " + std::to_string(d.labels.size()));
  for (const auto& ex : train) {
    d.texts.push_back(ex.text);
    d.train_y.push_back(d.labels.id(ex.label, ex.source, ex.line));
  }
  for (const auto& ex : dev) {
    d.dev_texts.push_back(ex.text);
    d.dev_y.push_back(d.labels.id(ex.label, ex.source, ex.line));
  }
  d.train_examples = train.size();
  d.dev_examples = dev.size();
  std::string counts;
  {
    std::vector<int64_t> n(static_cast<size_t>(d.labels.size()), 0);
    for (auto y : d.train_y) ++n[static_cast<size_t>(y)];
    for (int64_t c = 0; c < d.labels.size(); ++c)
      counts += (c ? ", " : "") + d.labels.name(c) + " " + std::to_string(n[static_cast<size_t>(c)]);
  }
  log("train: " + std::to_string(train.size()) + " examples (" + counts + ")" +
      (train_stats.summary().empty() ? "" : "; " + train_stats.summary()) + "; dev: " +
      std::to_string(dev.size()) + " examples" + (dev_stats.summary().empty() ? "" : "; " + dev_stats.summary()));
  return d;
}

/// config.json of the model being trained (without its results yet).
nlohmann::json sentiment_config(const SentimentTrainConfig& config, const SentimentData& d, const Tokenizer& tokenizer) {
  auto json = new_model_config(kTask);
  json["model"] = config.model.to_json();
  json["classifier"] = {{"pooling", config.pooling},
                        {"embed_dropout", config.embed_dropout},
                        {"word_dropout", config.word_dropout},
                        {"lm_weight", config.lm_weight}};
  json["vocab_size"] = tokenizer.vocab_size();
  json["labels"] = d.labels.names();
  json["label_aliases"] = d.aliases;
  json["tokenizer"] = {{"file", "tokenizer.model"}, {"type", config.spm_type}, {"vocab_size", config.vocab_size},
                       {"normalization", config.spm_normalization}};
  json["weights"] = weights_entry(config.half);
  json["ensemble"] = config.ensemble;
  json["max_length"] = config.max_length;
  json["training"] = training_record(config.training);
  json["training"]["sample_alpha"] = config.sample_alpha;
  json["training"]["sample_nbest"] = config.sample_nbest;
  json["training"]["lm_weight"] = config.lm_weight;
  if (!config.teacher.empty()) {
    json["training"]["teacher"] = config.teacher;
    json["training"]["augment_spans"] = config.augment_spans;
  }
  json["data"] = {{"train", config.train_path},
                  {"dev", config.dev_path},
                  {"format", config.format},
                  {"train_examples", d.train_examples},
                  {"dev_examples", d.dev_examples}};
  json["members_done"] = 0;
  return json;
}

/// On --resume, what the run being continued recorded of its members.
void keep_member_results(const std::string& dir, nlohmann::json& json) {
  const std::string file = dir + "/config.json";
  if (!file_exists(file)) return;
  nlohmann::json old;
  try {
    old = nlohmann::json::parse(read_file(file));
  } catch (const nlohmann::json::exception&) {
    throw InputError(file, 0, "not valid JSON (the run to resume is damaged)");
  }
  if (old.is_object() && old.contains("member_results") && old["member_results"].is_array())
    json["member_results"] = old["member_results"];
}

/// Distillation from a teacher model on random spans of the training texts:
/// the teacher's probabilities stand in for the phrase labels SST-2's
/// sentence split does not have. Appends the spans to `d` (label -1) and
/// returns their target probabilities [spans, C] (undefined when off).
torch::Tensor add_distillation_spans(const SentimentTrainConfig& config, SentimentData& d, const TaskLog& log) {
  if (config.teacher.empty() || config.augment_spans <= 0) return {};
  auto teacher = SentimentModel::load(config.teacher, std::nullopt, config.model.verify);
  if (teacher.labels().names() != d.labels.names())
    throw InputError(config.teacher + "/config.json", 0, "the teacher's labels differ from the data's");
  DataRng rng(config.training.seed * 7919 + 17);
  std::vector<std::string> spans;
  for (const auto& text : d.texts) {
    const auto words = split_whitespace(text);
    if (words.size() < 4) continue;
    for (int64_t k = 0; k < config.augment_spans; ++k) {
      const size_t len = 2 + rng.below(words.size() - 2);  // 2 .. n-1 words
      const size_t start = rng.below(words.size() - len + 1);
      std::string span;
      for (size_t w = start; w < start + len; ++w) span += (w > start ? " " : "") + words[w];
      spans.push_back(std::move(span));
    }
  }
  auto soft = teacher.probabilities(spans, 256);
  for (auto& sp : spans) {
    d.texts.push_back(std::move(sp));
    d.train_y.push_back(-1);
  }
  log("distillation: " + std::to_string(soft.size(0)) + " spans labelled by " + config.teacher);
  return soft;
}

/// How a fine-tuning run (--init-from) starts each ensemble member: the
/// source's member of the same index, the output rows of shared labels
/// kept, --freeze applied.
std::function<void(TextClassifier&, int64_t)> sentiment_initialiser(const InitSource& source,
                                                                     const std::vector<std::string>& labels,
                                                                     const SentimentTrainConfig& config,
                                                                     const TaskLog& log) {
  const auto file = source.config_file();
  const auto source_labels = config_get<std::vector<std::string>>(source.config(), "labels", file);
  const int64_t members = config_optional(source.config(), "ensemble", file, int64_t{1});
  if (config.ensemble > members)
    throw std::invalid_argument("--ensemble " + std::to_string(config.ensemble) + ": " + source.dir() + " has " +
                                std::to_string(members) + " member(s) to start them from");
  std::string added;
  for (const auto& l : labels)
    if (std::find(source_labels.begin(), source_labels.end(), l) == source_labels.end()) added += " " + l;
  log("fine-tuning " + source.dir() + " (" + std::to_string(source_labels.size()) + " labels" +
      (added.empty() ? std::string(")") : "; new:" + added + ")"));
  const auto mapping = label_mapping(source_labels, labels);
  return [&source, mapping, &config, &log](TextClassifier& model, int64_t member) {
    const auto file = source.config_file();
    TextClassifier from(classifier_options(source.config(), file, config.model.implementation()));
    start_from(source, *from, sentiment_weights_name(member), *model, {{"output.weight", {0}}, {"output.bias", {0}}},
               mapping);
    const auto frozen = apply_freeze(*model, config.training.freeze, {{"embedding."}, "encoder.", config.model.layers});
    if (!frozen.empty() && member == 0) log(frozen);
  };
}

std::string member_checkpoint(int64_t member) {
  return member == 0 ? "checkpoint.pt" : "checkpoint." + std::to_string(member) + ".pt";
}

/// Trains ensemble member `member` (seed + member) into `dir`; with --resume,
/// a member with a checkpoint continues (or reports it had finished) and
/// one without starts afresh.
TrainResult train_member(const SentimentTrainConfig& config, const std::string& dir, int64_t member,
                         const TextClassifierOptions& options, const Tokenizer& tokenizer, const SentimentData& d,
                         const std::vector<std::vector<int64_t>>& dev_ids, const torch::Tensor& soft,
                         const TaskLog& log, const ProcessGroup& group,
                         const std::function<void(TextClassifier&, int64_t)>& initialise) {
  const uint64_t seed = config.training.seed + static_cast<uint64_t>(member);
  torch::manual_seed(seed);
  TextClassifier model(options);
  if (initialise) initialise(model, member);
  SentimentTrainConfig member_config = config;
  member_config.training.seed = seed;
  // Whether this member has a checkpoint: rank 0's model directory decides.
  member_config.training.resume =
      config.training.resume && group.broadcast_flag(file_exists(dir + "/" + member_checkpoint(member)));
  SentimentTask task(member_config, model, tokenizer, d.texts, d.train_y, dev_ids, d.dev_y, d.labels.names(),
                     dir + "/" + sentiment_weights_name(member), group, soft);
  if (member == 0 && task.truncated() > 0)
    log(std::to_string(task.truncated()) + " training texts truncated to --max-length " +
        std::to_string(config.max_length) + " tokens");
  log((config.ensemble > 1 ? "member " + std::to_string(member + 1) + "/" + std::to_string(config.ensemble) + ": "
                           : std::string()) +
      "model with " + std::to_string(count_parameters(*model)) + " parameters, " + config.model.rnn + " (" +
      config.model.impl + "), " + std::to_string(config.model.layers) + " layer(s) x " +
      std::to_string(config.model.hidden) + (config.model.bidirectional ? " x 2 directions" : "") + ", " +
      config.pooling + " pooling, seed " + std::to_string(seed));
  auto t = TrainerOptions::of(member_config.training, dir, "accuracy", config.runtime.quiet);
  t.checkpoint_name = member_checkpoint(member);
  t.log_fields = {{"member", member}};
  t.append_log = member > 0;
  return Trainer(t, group).fit(task);
}

/// The dev scores of what predict will use: the members' averaged probabilities.
ClassificationReport evaluate_ensemble(const std::string& dir, const std::vector<std::vector<int64_t>>& dev_ids,
                                       const SentimentData& d) {
  auto loaded = SentimentModel::load(dir, std::nullopt, false);
  auto probs = loaded.probabilities_of_ids(dev_ids, 128);
  const auto pred = probs.argmax(1);
  return classification_report(
      d.dev_y, std::vector<int64_t>(pred.data_ptr<int64_t>(), pred.data_ptr<int64_t>() + pred.numel()),
      d.labels.names());
}

}  // namespace

TrainResult train_sentiment(const SentimentTrainConfig& config, const ProcessGroup& group) {
  const InterruptGuard interrupts;
  ModelTransaction transaction(config.model.dir, kTask, write_options(config.training), group);
  const std::string dir = transaction.path();
  const TaskLog log(config.runtime.quiet);
  std::optional<InitSource> source;
  if (!config.training.init_from.empty()) source.emplace(kTask, config.training.init_from);
  const std::vector<std::string> source_labels =
      source ? config_get<std::vector<std::string>>(source->config(), "labels", source->config_file())
             : std::vector<std::string>{};
  SentimentData d = read_sentiment_data(config, log, source_labels);
  interrupts.check();

  TokenizerTrainOptions spm;
  spm.vocab_size = config.vocab_size;
  spm.model_type = config.spm_type;
  spm.normalization = config.spm_normalization;
  const Tokenizer tokenizer =
      source ? Tokenizer::load(source->copy_file("tokenizer.model", dir, group))
             : train_model_tokenizer(dir, config.training.resume, d.texts, spm, "tokenizer.model", group);
  log("tokenizer: " + config.spm_type + ", " + std::to_string(tokenizer.vocab_size()) + " pieces" +
      (source ? " (from " + source->dir() + ")" : std::string()));
  std::function<void(TextClassifier&, int64_t)> initialise;
  if (source) {
    int64_t unknown = 0, total = 0;
    for (const auto& text : d.texts)
      for (const auto id : tokenizer.encode(text)) {
        unknown += id == Tokenizer::kUnkId;
        ++total;
      }
    log(coverage_message(unknown, total, "training tokens", *source));
    initialise = sentiment_initialiser(*source, d.labels.names(), config, log);
  }

  interrupts.check();
  auto json = sentiment_config(config, d, tokenizer);
  if (source) json["init_from"] = source->record();
  if (transaction.resuming()) keep_member_results(dir, json);
  write_model_config(dir, json);
  const auto options = classifier_options(json, dir + "/config.json", config.model.implementation());

  std::vector<std::vector<int64_t>> dev_ids;
  for (const auto& text : d.dev_texts) dev_ids.push_back(finish_ids(tokenizer.encode(text), config.max_length));
  const torch::Tensor soft = add_distillation_spans(config, d, log);

  TrainResult last;
  bool trained = false;
  for (int64_t member = 0; member < config.ensemble; ++member) {
    last = train_member(config, dir, member, options, tokenizer, d, dev_ids, soft, log, group, initialise);
    if (last.interrupted()) return last;
    if (!group.main()) continue;  // rank 0 keeps the model directory
    trained = trained || !last.already_finished;
    if (!last.already_finished || !json.contains("member_results") ||
        json["member_results"].size() <= static_cast<size_t>(member)) {
      auto record = training_results(last, "dev_accuracy");
      record["seed"] = config.training.seed + static_cast<uint64_t>(member);
      json["member_results"][static_cast<size_t>(member)] = record;
    }
    json["members_done"] = member + 1;
    write_model_config(dir, json);
  }
  if (!group.main()) return last;
  if (!trained && transaction.resuming_finished()) {
    log.always(already_finished_message(transaction.target(), last));
    return last;
  }

  const auto report = evaluate_ensemble(dir, dev_ids, d);
  json["results"] = {{"dev_accuracy", report.accuracy}, {"dev_macro_f1", report.macro_f1}};
  write_model_config(dir, json);
  transaction.commit();
  log("dev accuracy " + format_fixed(100 * report.accuracy, 2) + "%" +
      (config.ensemble > 1 ? " (ensemble of " + std::to_string(config.ensemble) + ")" : std::string()) +
      ", macro-F1 " + format_fixed(100 * report.macro_f1, 2) + "%; model in " + transaction.target());
  last.best_score = report.accuracy;
  return last;
}

InheritedOptions sentiment_inherited_options(const std::string& init_from) {
  const InitSource source(kTask, init_from);
  const auto& c = source.config();
  const auto file = source.config_file();
  auto o = common_inherited_options(source, true, true);
  inherit_tokenizer_options(source, o);
  const auto cl = config_get<nlohmann::json>(c, "classifier", file);
  o.fixed["pooling"] = config_get<std::string>(cl, "pooling", file);
  o.defaults["embed-dropout"] = config_get<double>(cl, "embed_dropout", file);
  o.defaults["word-dropout"] = config_get<double>(cl, "word_dropout", file);
  o.defaults["lm-weight"] = config_optional(cl, "lm_weight", file, 0.0);
  o.defaults["max-length"] = config_optional(c, "max_length", file, int64_t{256});
  o.defaults["ensemble"] = config_optional(c, "ensemble", file, int64_t{1});
  const auto t = config_get<nlohmann::json>(c, "training", file);
  o.defaults["sample-alpha"] = config_optional(t, "sample_alpha", file, 0.0);
  o.defaults["sample-nbest"] = config_optional(t, "sample_nbest", file, int64_t{64});
  if (c.contains("label_aliases") && c["label_aliases"].is_object() && !c["label_aliases"].empty()) {
    std::string names;
    for (const auto& [from, to] : c["label_aliases"].items())
      names += (names.empty() ? "" : ",") + from + "=" + to.get<std::string>();
    o.defaults["label-names"] = names;
  }
  return o;
}

std::map<std::string, std::string> parse_label_names(const std::string& spec) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start < spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    const std::string item = spec.substr(start, end - start);
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      throw std::invalid_argument("--label-names expects LABEL=NAME[,LABEL=NAME...], got '" + item + "'");
    out[item.substr(0, eq)] = item.substr(eq + 1);
    start = end + 1;
  }
  return out;
}

std::string sentiment_weights_name(int64_t member) {
  return member == 0 ? "weights.pt" : "weights." + std::to_string(member) + ".pt";
}

// ---------------------------------------------------------------- loading

SentimentModel::SentimentModel(nlohmann::json config, Tokenizer tokenizer, LabelSet labels,
                               std::vector<TextClassifier> members)
    : config_(std::move(config)), tokenizer_(std::move(tokenizer)), labels_(std::move(labels)),
      members_(std::move(members)), max_length_(config_.value("max_length", int64_t{256})) {}

SentimentModel SentimentModel::load(const std::string& dir, std::optional<Implementation> impl, bool verify) {
  auto config = read_model_config(dir, kTask, verify);
  const std::string file = dir + "/config.json";
  const Implementation chosen = model_implementation(config, file, impl);
  auto tokenizer = load_model_tokenizer(dir, config);
  LabelSet labels(config_get<std::vector<std::string>>(config, "labels", file));
  const auto options = classifier_options(config, file, chosen);
  // A model still training its later ensemble members predicts with those done.
  if (config.contains("max_length")) config_get_in(config, "max_length", file, int64_t{1}, int64_t{1000000});
  const int64_t ensemble =
      config.contains("ensemble") ? config_get_in(config, "ensemble", file, int64_t{1}, int64_t{64}) : 1;
  const int64_t members = std::max<int64_t>(
      1, std::min(ensemble, config.contains("members_done")
                                ? config_get_in(config, "members_done", file, int64_t{0}, int64_t{64})
                                : ensemble));
  std::vector<TextClassifier> loaded;
  for (int64_t k = 0; k < members; ++k) {
    TextClassifier model(options);
    load_weights(*model, model_file(dir, sentiment_weights_name(k)), verify);
    model->eval();
    loaded.push_back(model);
  }
  return SentimentModel(std::move(config), std::move(tokenizer), std::move(labels), std::move(loaded));
}

std::vector<int64_t> SentimentModel::encode(const std::string& text) const {
  return finish_ids(tokenizer_.encode(text), max_length_);
}

torch::Tensor SentimentModel::probabilities_of_ids(const std::vector<std::vector<int64_t>>& ids,
                                                   int64_t batch_size, const std::function<void(int64_t)>& progress) {
  torch::NoGradGuard no_grad;
  const auto n = static_cast<int64_t>(ids.size());
  auto out = torch::empty({n, labels_.size()});
  if (n == 0) return out;
  std::vector<int64_t> lengths;
  for (const auto& s : ids) lengths.push_back(static_cast<int64_t>(s.size()));
  for (const auto& b : sorted_batches(lengths, batch_size)) {
    std::vector<std::vector<int64_t>> seqs;
    for (auto i : b) seqs.push_back(ids[static_cast<size_t>(i)]);
    auto batch = pad_batch(seqs);
    torch::Tensor p;
    for (auto& member : members_) {
      auto q = torch::softmax(member->forward(batch.ids, batch.lengths), 1);
      p = p.defined() ? p + q : q;
    }
    if (members_.size() > 1) p /= static_cast<double>(members_.size());
    out.index_copy_(0, torch::tensor(b, torch::kInt64), p);
    if (progress) progress(static_cast<int64_t>(b.size()));
  }
  return out;
}

torch::Tensor SentimentModel::probabilities(const std::vector<std::string>& texts, int64_t batch_size,
                                            const std::function<void(int64_t)>& progress) {
  std::vector<std::vector<int64_t>> ids;
  ids.reserve(texts.size());
  for (const auto& t : texts) ids.push_back(encode(t));
  return probabilities_of_ids(ids, batch_size, progress);
}

ClassificationReport evaluate_sentiment(SentimentModel& model, const std::string& path, const std::string& format,
                                        bool progress) {
  const auto examples = read_classification(path, parse_classification_format(format));
  const auto aliases = config_optional(model.config(), "label_aliases", "config.json",
                                       std::map<std::string, std::string>{});
  std::vector<std::string> texts;
  std::vector<int64_t> gold;
  for (const auto& ex : examples) {
    texts.push_back(ex.text);
    const auto it = aliases.find(ex.label);
    gold.push_back(model.labels().id(it == aliases.end() ? ex.label : it->second, ex.source, ex.line));
  }
  CountProgress bar(!progress, "texts", static_cast<int64_t>(texts.size()));
  const auto probs = model.probabilities(texts, 64, [&](int64_t n) { bar.add(n); });
  const auto pred = probs.argmax(1);
  std::vector<int64_t> predicted(pred.data_ptr<int64_t>(), pred.data_ptr<int64_t>() + pred.numel());
  return classification_report(gold, predicted, model.labels().names());
}

// ---------------------------------------------------------------- prediction

namespace {

struct ResultWriter {
  const SentimentModel& model;
  const PredictOptions& options;
  std::ostream& out;

  // Labels to show, best first, after top-k and threshold.
  std::vector<std::pair<int64_t, float>> ranked(const float* p) const {
    std::vector<std::pair<int64_t, float>> r;
    for (int64_t c = 0; c < model.labels().size(); ++c) r.emplace_back(c, p[c]);
    std::stable_sort(r.begin(), r.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    r.resize(static_cast<size_t>(std::min<int64_t>(options.top_k, static_cast<int64_t>(r.size()))));
    return r;
  }

  std::string best_label(const float* p) const {
    const auto r = ranked(p);
    return r.front().second < options.threshold ? "?" : model.labels().name(r.front().first);
  }

  void tsv_fields(const float* p) const {
    const auto r = ranked(p);
    for (size_t k = 0; k < r.size(); ++k) {
      const std::string label = (k == 0 && r[k].second < options.threshold) ? "?" : model.labels().name(r[k].first);
      out << (k ? "\t" : "") << label << "\t" << format_fixed(r[k].second, 4);
    }
  }

  nlohmann::json json_probs(const float* p) const {
    nlohmann::json j = nlohmann::json::object();
    for (int64_t c = 0; c < model.labels().size(); ++c) j[model.labels().name(c)] = std::round(p[c] * 1e6) / 1e6;
    return j;
  }

  void line_result(const std::string& file, int64_t line, const std::string& text, const float* p) const {
    if (options.format == "tsv") {
      out << file << "\t" << line << "\t";
      if (p == nullptr) out << "<empty>\t-";
      else tsv_fields(p);
      out << "\n";
    } else {
      nlohmann::json j = record(text, p);
      j["file"] = file;
      j["line"] = line;
      out << j.dump() << "\n";
    }
  }

  /// A text's JSON record; `p` null: a blank text.
  nlohmann::json record(const std::string& text, const float* p) const {
    if (p == nullptr) return {{"empty", true}};
    return {{"text", text},
            {"label", best_label(p)},
            {"probability", std::round(ranked(p).front().second * 1e6) / 1e6},
            {"probabilities", json_probs(p)}};
  }
};

}  // namespace

namespace {

/// --unit line: one result per line of the batch, empty lines marked.
void predict_lines(SentimentModel& model, const ResultWriter& writer, const std::string& name,
                   const std::vector<NumberedLine>& lines) {
  std::vector<std::string> texts;
  std::vector<size_t> which;
  for (size_t k = 0; k < lines.size(); ++k) {
    if (lines[k].text.find_first_not_of(" \t\r") == std::string::npos) continue;
    texts.push_back(lines[k].text);
    which.push_back(k);
  }
  auto probs = model.probabilities(texts, writer.options.batch_size).contiguous();
  size_t next = 0;
  for (size_t k = 0; k < lines.size(); ++k) {
    const float* p = nullptr;
    if (next < which.size() && which[next] == k) p = probs[static_cast<int64_t>(next++)].data_ptr<float>();
    writer.line_result(name, lines[k].number, lines[k].text, p);
  }
  writer.out.flush();
}

/// --unit file: the document's sentences scored, then combined by their
/// length-weighted mean.
void predict_document(SentimentModel& model, const ResultWriter& writer, const std::string& name) {
  const PredictOptions& options = writer.options;
  std::ostream& out = writer.out;
  const std::string text = read_text_file(name);
  std::vector<std::string> sentences;
  std::vector<int64_t> sentence_lines;
  {
    std::istringstream lines(text);
    std::string line;
    int64_t n = 0;
    while (std::getline(lines, line)) {
      ++n;
      for (auto& s : split_sentences(line)) {
        sentences.push_back(std::move(s));
        sentence_lines.push_back(n);
      }
    }
  }
  if (sentences.empty()) throw InputError(name, 0, "no text (empty file)");
  std::vector<std::vector<int64_t>> ids;
  for (const auto& s : sentences) ids.push_back(model.encode(s));
  auto probs = model.probabilities_of_ids(ids, options.batch_size).contiguous();
  auto weights = torch::empty({static_cast<int64_t>(ids.size()), 1});
  for (size_t k = 0; k < ids.size(); ++k) weights[static_cast<int64_t>(k)][0] = static_cast<float>(ids[k].size());
  auto doc = ((probs * weights).sum(0) / weights.sum()).contiguous();
  const float* dp = doc.data_ptr<float>();
  if (options.format == "tsv") {
    out << name << "\t-\t";
    writer.tsv_fields(dp);
    out << "\n";
    for (size_t k = 0; k < sentences.size(); ++k) {
      out << name << "\t" << sentence_lines[k] << "\t";
      writer.tsv_fields(probs[static_cast<int64_t>(k)].data_ptr<float>());
      out << "\t" << sentences[k] << "\n";
    }
  } else {
    nlohmann::json j = {{"file", name},
                        {"label", writer.best_label(dp)},
                        {"probability", std::round(writer.ranked(dp).front().second * 1e6) / 1e6},
                        {"probabilities", writer.json_probs(dp)}};
    j["sentences"] = nlohmann::json::array();
    for (size_t k = 0; k < sentences.size(); ++k) {
      const float* p = probs[static_cast<int64_t>(k)].data_ptr<float>();
      j["sentences"].push_back({{"line", sentence_lines[k]},
                                {"text", sentences[k]},
                                {"label", writer.best_label(p)},
                                {"probability", std::round(writer.ranked(p).front().second * 1e6) / 1e6},
                                {"weight", ids[k].size()}});
    }
    out << j.dump() << "\n";
  }
  out.flush();
}

}  // namespace

std::vector<nlohmann::json> sentiment_records(SentimentModel& model, const std::vector<std::string>& texts,
                                              const PredictOptions& options) {
  std::ostringstream unused;
  const ResultWriter writer{model, options, unused};
  std::vector<std::string> scored;
  std::vector<size_t> which;
  for (size_t k = 0; k < texts.size(); ++k) {
    if (texts[k].find_first_not_of(" \t\r") == std::string::npos) continue;
    scored.push_back(texts[k]);
    which.push_back(k);
  }
  std::vector<nlohmann::json> records;
  if (texts.empty()) return records;
  torch::Tensor probs;
  if (!scored.empty()) probs = model.probabilities(scored, options.batch_size).contiguous();
  size_t next = 0;
  for (size_t k = 0; k < texts.size(); ++k) {
    const float* p = nullptr;
    if (next < which.size() && which[next] == k) p = probs[static_cast<int64_t>(next++)].data_ptr<float>();
    records.push_back(writer.record(texts[k], p));
  }
  return records;
}

int predict_sentiment(SentimentModel& model, const std::vector<std::string>& inputs, const PredictOptions& options,
                      std::ostream& out, std::ostream& err) {
  const ResultWriter writer{model, options, out};
  CountProgress bar(!options.progress, "lines");
  return for_each_input(inputs, options.error_prefix, err, [&](const std::string& path) {
    if (options.unit == "line") {
      const std::string name = path;
      stream_lines(path, static_cast<size_t>(options.batch_size * 4),
                   [&](const std::vector<NumberedLine>& lines) { predict_lines(model, writer, name, lines); }, &bar,
                   &err, options.error_prefix);
    } else {
      predict_document(model, writer, path);
    }
  });
}

SentimentBench benchmark_sentiment(SentimentModel& model, const std::vector<std::string>& texts,
                                  int64_t batch_size, int repeat) {
  SentimentBench r;
  r.sentences = static_cast<int64_t>(texts.size());
  model.probabilities(std::vector<std::string>(texts.begin(), texts.begin() + std::min<size_t>(texts.size(), 64)),
                      batch_size);  // warm-up
  std::vector<double> rates;
  for (int k = 0; k < repeat; ++k) {
    const Stopwatch watch;
    model.probabilities(texts, batch_size);
    rates.push_back(static_cast<double>(texts.size()) / watch.seconds());
  }
  r.sentences_per_s = median(rates);
  std::vector<double> latencies;
  const size_t n = std::min<size_t>(texts.size(), 200);
  for (size_t i = 0; i < n; ++i) {
    const Stopwatch watch;
    model.probabilities({texts[i]}, 1);
    latencies.push_back(watch.ms());
  }
  r.latency_ms_median = median(latencies);
  std::sort(latencies.begin(), latencies.end());
  r.latency_ms_p90 = latencies[latencies.size() * 9 / 10];
  return r;
}

}  // namespace cellstate
