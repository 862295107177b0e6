#include "cellstate/nn/loss.h"
#include "cellstate/tasks/translate.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <sys/stat.h>

#include "cellstate/data/batching.h"
#include "cellstate/data/word_split.h"
#include "cellstate/data/readers.h"
#include "cellstate/tasks/finetune.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/util/interrupt.h"
#include "cellstate/tasks/predict.h"
#include "cellstate/tasks/task.h"
#include "cellstate/util/io.h"
#include "cellstate/util/progress.h"
#include "cellstate/util/text.h"

namespace cellstate {

namespace {

constexpr const char* kTask = "translate";
constexpr int64_t kMaxSourceTokens = 256;

std::vector<int64_t> source_ids(const Tokenizer& t, const std::string& text, int64_t max_tokens,
                                int64_t* length = nullptr) {
  auto ids = t.encode(text);
  if (ids.empty()) ids.push_back(Tokenizer::kUnkId);
  if (length) *length = static_cast<int64_t>(ids.size());
  truncate(ids, max_tokens);
  return ids;
}

/// Decodes source id sequences in length-sorted batches; results in input order.
std::vector<std::vector<Hypothesis>> translate_ids(Seq2Seq& model, const std::vector<std::vector<int64_t>>& sources,
                                                   const DecodingOptions& options, int64_t batch_size,
                                                   const std::function<void(int64_t)>& progress = {}) {
  std::vector<std::vector<Hypothesis>> out(sources.size());
  std::vector<int64_t> lengths;
  for (const auto& s : sources) lengths.push_back(static_cast<int64_t>(s.size()));
  for (const auto& b : sorted_batches(lengths, batch_size)) {
    std::vector<std::vector<int64_t>> seqs;
    std::vector<int64_t> lens;
    for (auto i : b) {
      seqs.push_back(sources[static_cast<size_t>(i)]);
      lens.push_back(lengths[static_cast<size_t>(i)]);
    }
    const auto batch = pad_batch(seqs);
    Seq2SeqStepper stepper(model, batch.ids, batch.lengths);
    auto hyps = decode(stepper, lens, options, Tokenizer::kBosId, Tokenizer::kEosId);
    for (size_t k = 0; k < b.size(); ++k) {
      // Attention rows cover the padded batch; keep the sentence's own positions.
      for (auto& h : hyps[k])
        for (auto& row : h.attention) row.resize(static_cast<size_t>(lens[k]));
      out[static_cast<size_t>(b[k])] = std::move(hyps[k]);
    }
    if (progress) progress(static_cast<int64_t>(b.size()));
  }
  return out;
}

Seq2SeqOptions seq2seq_options(const nlohmann::json& config, const std::string& file, Implementation impl) {
  ModelOptions m;
  m.from_json(config_get<nlohmann::json>(config, "model", file), file);
  const auto s = config_get<nlohmann::json>(config, "seq2seq", file);
  Seq2SeqOptions o(config_get_in(s, "source_vocab", file, int64_t{4}, int64_t{10000000}),
                   config_get_in(s, "target_vocab", file, int64_t{4}, int64_t{10000000}));
  o.embed(m.embed).hidden(m.hidden).layers(m.layers).impl(impl).dropout(m.dropout);
  try {
    o.attention(parse_attention(config_get<std::string>(s, "attention", file)));
  } catch (const std::invalid_argument& e) {
    throw_config_error(file, e.what());
  }
  o.input_feeding(config_get<bool>(s, "input_feeding", file))
      .tie(config_get<bool>(s, "tie", file))
      .share_embeddings(config_get<bool>(s, "share_embeddings", file));
  return o;
}

/// A target sentence as training reads it: BOS, its pieces (at most
/// kMaxSourceTokens), EOS.
std::vector<int64_t> target_ids(const Tokenizer& tokenizer, const std::string& text) {
  auto t = tokenizer.encode(text);
  truncate(t, kMaxSourceTokens);
  t.insert(t.begin(), Tokenizer::kBosId);
  t.push_back(Tokenizer::kEosId);
  return t;
}

class TranslateTask : public TrainTask {
 public:
  TranslateTask(const TranslateTrainConfig& config, Seq2Seq model, std::vector<std::vector<int64_t>> src,
                std::vector<std::vector<int64_t>> tgt, std::vector<std::vector<int64_t>> dev_src,
                std::vector<std::string> dev_refs, const Tokenizer& target_tokenizer, std::string weights_path,
                ProcessGroup group)
      : config_(config), model_(std::move(model)), src_(std::move(src)), tgt_(std::move(tgt)),
        dev_src_(std::move(dev_src)), dev_refs_(std::move(dev_refs)), target_(target_tokenizer),
        weights_path_(std::move(weights_path)), group_(std::move(group)) {}

  torch::nn::Module& module() override { return *model_; }

  int64_t begin_epoch(int64_t epoch) override {
    std::vector<int64_t> lengths;
    for (size_t i = 0; i < tgt_.size(); ++i)
      lengths.push_back(static_cast<int64_t>(std::max(tgt_[i].size(), src_[i].size())));
    BucketOptions b;
    b.batch_size = config_.training.batch_size;
    b.max_tokens = config_.max_tokens;
    batches_ = bucket_batches(lengths, b, config_.training.seed, epoch);
    return static_cast<int64_t>(batches_.size());
  }

  StepResult train_step(int64_t index) override {
    // This rank's shard of the batch; its mean loss weighted by its share of
    // the batch's target tokens (so the ranks' sum is the batch's mean).
    const auto& all = batches_[static_cast<size_t>(index)];
    const auto part = shard_range(static_cast<int64_t>(all.size()), group_.rank(), group_.size());
    int64_t batch_tokens = 0, part_tokens = 0;
    std::vector<std::vector<int64_t>> s, t;
    for (int64_t k = 0; k < static_cast<int64_t>(all.size()); ++k) {
      const auto i = static_cast<size_t>(all[static_cast<size_t>(k)]);
      const auto predicted = static_cast<int64_t>(tgt_[i].size()) - 1;
      batch_tokens += predicted;
      if (k < part.begin || k >= part.end) continue;
      part_tokens += predicted;
      s.push_back(src_[i]);
      t.push_back(tgt_[i]);
    }
    if (s.empty() || part_tokens == 0) return {};  // nothing of this batch on this rank
    const double share = static_cast<double>(part_tokens) / static_cast<double>(batch_tokens);
    const auto [logits, gold] = target_logits(s, t);
    auto loss = smoothed_cross_entropy(logits, gold, config_.label_smoothing);
    return {loss.item<double>() * share, gold.size(0), share == 1.0 ? loss : loss * share};
  }

  Evaluation evaluate() override {
    // Teacher-forced cross-entropy per target token (no label smoothing).
    if (dev_tgt_.empty())
      for (const auto& r : dev_refs_) dev_tgt_.push_back(target_ids(target_, r));
    double loss = 0;
    int64_t tokens = 0;
    for (size_t b = 0; b < dev_src_.size(); b += 64) {
      const size_t e = std::min(dev_src_.size(), b + 64);
      const std::vector<std::vector<int64_t>> s(dev_src_.begin() + static_cast<std::ptrdiff_t>(b),
                                                dev_src_.begin() + static_cast<std::ptrdiff_t>(e));
      const std::vector<std::vector<int64_t>> t(dev_tgt_.begin() + static_cast<std::ptrdiff_t>(b),
                                                dev_tgt_.begin() + static_cast<std::ptrdiff_t>(e));
      const auto [logits, gold] = target_logits(s, t);
      namespace F = torch::nn::functional;
      loss += F::cross_entropy(logits, gold, F::CrossEntropyFuncOptions().reduction(torch::kSum)).item<double>();
      tokens += gold.size(0);
    }
    DecodingOptions o;
    o.beam = config_.dev_beam;
    const auto hyps = translate_ids(model_, dev_src_, o, 64);
    std::vector<std::string> out;
    for (const auto& h : hyps) out.push_back(target_.decode(h.front().tokens));
    const auto bleu = corpus_bleu(out, dev_refs_);
    BleuOptions lower;
    lower.lowercase = true;
    const auto bleu_lc = corpus_bleu(out, dev_refs_, lower);
    return {bleu.score,
            {{"bleu", bleu.score},
             {"bleu_lowercase", bleu_lc.score},
             {"chrf", corpus_chrf(out, dev_refs_)},
             {"loss", tokens ? loss / static_cast<double>(tokens) : 0.0}}};
  }

  void save_best() override { save_weights(*model_, weights_path_, config_.half); }

 private:
  const TranslateTrainConfig& config_;
  Seq2Seq model_;
  std::vector<std::vector<int64_t>> src_, tgt_, dev_src_;
  std::vector<std::string> dev_refs_;
  const Tokenizer& target_;
  std::string weights_path_;
  ProcessGroup group_;
  std::vector<std::vector<int64_t>> dev_tgt_;  // the dev references' ids, for the dev loss
  std::vector<std::vector<int64_t>> batches_;

  /// The output layer's logits at the real target positions of pairs (s, t)
  /// under teacher forcing, and the gold tokens there (t[1:]).
  std::pair<torch::Tensor, torch::Tensor> target_logits(const std::vector<std::vector<int64_t>>& s,
                                                        const std::vector<std::vector<int64_t>>& t) {
    const auto src = pad_batch(s);
    const auto tgt = pad_batch(t).ids;
    auto states = model_->decode_states(src.ids, src.lengths, tgt.slice(1, 0, tgt.size(1) - 1));
    // The output layer (the largest cost) runs once, over the real target positions only.
    auto gold = tgt.slice(1, 1).reshape(-1);
    const auto real = gold.ne(0).nonzero().squeeze(1);
    return {model_->logits(states.reshape({-1, states.size(2)}).index_select(0, real)), gold.index_select(0, real)};
  }
};

}  // namespace

InheritedOptions translate_inherited_options(const std::string& init_from) {
  const InitSource source(kTask, init_from);
  const auto& c = source.config();
  const auto file = source.config_file();
  auto o = common_inherited_options(source, false, false);
  const auto tok = config_get<nlohmann::json>(c, "tokenizer", file);
  o.fixed["vocab-size"] = config_get<int64_t>(tok, "vocab_size", file);
  o.fixed["separate-vocab"] = !config_get<bool>(tok, "joint", file);
  const auto s = config_get<nlohmann::json>(c, "seq2seq", file);
  o.fixed["attention"] = config_get<std::string>(s, "attention", file);
  o.fixed["input-feeding"] = config_get<bool>(s, "input_feeding", file);
  o.fixed["tie"] = config_get<bool>(s, "tie", file);
  const auto t = config_get<nlohmann::json>(c, "training", file);
  o.defaults["label-smoothing"] = config_optional(t, "label_smoothing", file, 0.0);
  o.defaults["batch-tokens"] = config_optional(t, "max_tokens", file, int64_t{0});
  o.defaults["dev-beam"] = config_optional(t, "dev_beam", file, int64_t{1});
  return o;
}

TrainResult train_translation(const TranslateTrainConfig& config, const ProcessGroup& group) {
  const InterruptGuard interrupts;
  ModelTransaction transaction(config.model.dir, kTask, write_options(config.training), group);
  const std::string dir = transaction.path();
  const TaskLog log(config.runtime.quiet);
  ReadStats train_stats, dev_stats;
  ParallelOptions po;
  po.max_words = config.max_words;
  const auto train = read_parallel(config.src_train, config.tgt_train, po, &train_stats);
  const auto dev = read_parallel(config.src_dev, config.tgt_dev, {}, &dev_stats);
  log("train: " + std::to_string(train.size()) + " pairs" +
      (train_stats.summary().empty() ? "" : " (" + train_stats.summary() + ")") + "; dev: " +
      std::to_string(dev.size()) + " pairs");
  interrupts.check();
  TokenizerTrainOptions spm;
  spm.vocab_size = config.vocab_size;
  std::vector<std::string> src_texts, tgt_texts;
  for (const auto& p : train) {
    src_texts.push_back(p.source);
    tgt_texts.push_back(p.target);
  }
  std::optional<InitSource> init;
  if (!config.training.init_from.empty()) init.emplace(kTask, config.training.init_from);
  std::shared_ptr<Tokenizer> source, target;
  if (init) {
    source = std::make_shared<Tokenizer>(Tokenizer::load(init->copy_file("tokenizer.model", dir, group)));
    if (!config.joint_vocab)
      target = std::make_shared<Tokenizer>(Tokenizer::load(init->copy_file("target_tokenizer.model", dir, group)));
  } else if (config.joint_vocab) {
    std::vector<std::string> both = src_texts;
    both.insert(both.end(), tgt_texts.begin(), tgt_texts.end());
    source = std::make_shared<Tokenizer>(
        train_model_tokenizer(dir, config.training.resume, both, spm, "tokenizer.model", group));
  } else {
    source = std::make_shared<Tokenizer>(
        train_model_tokenizer(dir, config.training.resume, src_texts, spm, "tokenizer.model", group));
    target = std::make_shared<Tokenizer>(
        train_model_tokenizer(dir, config.training.resume, tgt_texts, spm, "target_tokenizer.model", group));
  }
  const Tokenizer& tt = target ? *target : *source;
  std::vector<std::vector<int64_t>> src_ids, tgt_ids, dev_src;
  std::vector<std::string> dev_refs;
  for (const auto& p : train) {
    src_ids.push_back(source_ids(*source, p.source, kMaxSourceTokens));
    tgt_ids.push_back(target_ids(tt, p.target));
  }
  for (const auto& p : dev) {
    dev_src.push_back(source_ids(*source, p.source, kMaxSourceTokens));
    dev_refs.push_back(p.target);
  }
  if (init) {
    int64_t unknown = 0, total = 0;
    for (const auto* ids : {&src_ids, &tgt_ids})
      for (const auto& s : *ids) {
        unknown += std::count(s.begin(), s.end(), Tokenizer::kUnkId);
        total += static_cast<int64_t>(s.size());
      }
    log(coverage_message(unknown, total, "training tokens (both sides)", *init));
  }
  auto json = new_model_config(kTask);
  json["model"] = config.model.to_json();
  json["seq2seq"] = {{"source_vocab", source->vocab_size()}, {"target_vocab", tt.vocab_size()},
                     {"attention", config.attention},     {"input_feeding", config.input_feeding},
                     {"tie", config.tie},                 {"share_embeddings", config.joint_vocab}};
  json["tokenizer"] = {{"joint", config.joint_vocab}, {"vocab_size", config.vocab_size}};
  json["max_source_tokens"] = kMaxSourceTokens;
  json["weights"] = weights_entry(config.half);
  json["training"] = training_record(config.training);
  json["training"]["label_smoothing"] = config.label_smoothing;
  json["training"]["max_tokens"] = config.max_tokens;
  json["training"]["dev_beam"] = config.dev_beam;
  json["data"] = {{"src_train", config.src_train}, {"tgt_train", config.tgt_train}, {"src_dev", config.src_dev},
                  {"tgt_dev", config.tgt_dev},     {"train_pairs", train.size()},    {"dev_pairs", dev.size()}};
  if (init) json["init_from"] = init->record();
  write_model_config(dir, json);
  interrupts.check();
  torch::manual_seed(config.training.seed);
  Seq2Seq model(seq2seq_options(json, dir + "/config.json", config.model.implementation()));
  if (init) {
    Seq2Seq from(seq2seq_options(init->config(), init->config_file(), config.model.implementation()));
    start_from(*init, *from, "weights.pt", *model);
    log("fine-tuning " + init->dir());
    const auto frozen = apply_freeze(*model, config.training.freeze,
                                     {{"source_embedding.", "target_embedding."}, "encoder.", config.model.layers});
    if (!frozen.empty()) log(frozen);
  }
  log("model with " + std::to_string(count_parameters(*model)) + " parameters; vocabulary " + std::to_string(source->vocab_size()) +
      (config.joint_vocab ? " (joint)" : " / " + std::to_string(tt.vocab_size())));
  TranslateTask task(config, model, std::move(src_ids), std::move(tgt_ids), std::move(dev_src), std::move(dev_refs), tt,
                     dir + "/weights.pt", group);
  const auto result = Trainer(TrainerOptions::of(config.training, dir, "BLEU", config.runtime.quiet), group).fit(task);
  if (result.interrupted() || !group.main()) return result;
  if (result.already_finished && transaction.resuming_finished()) {
    log.always(already_finished_message(transaction.target(), result));
    return result;
  }
  json["results"] = training_results(result, "dev_bleu");
  write_model_config(dir, json);
  transaction.commit();
  log("dev BLEU " + format_fixed(result.best_score, 2) + " (beam " + std::to_string(config.dev_beam) + ") at epoch " +
      std::to_string(result.best_epoch) + "; model in " + transaction.target());
  return result;
}

TranslationModel::TranslationModel(nlohmann::json config, Seq2Seq model, std::shared_ptr<Tokenizer> source,
                                   std::shared_ptr<Tokenizer> target, int64_t max_source_tokens)
    : config_(std::move(config)), model_(std::move(model)), source_(std::move(source)), target_(std::move(target)),
      max_source_tokens_(max_source_tokens) {}

TranslationModel TranslationModel::load(const std::string& dir, std::optional<Implementation> impl, bool verify) {
  auto config = read_model_config(dir, kTask, verify);
  const std::string file = dir + "/config.json";
  const Implementation chosen = model_implementation(config, file, impl);
  const auto options = seq2seq_options(config, file, chosen);
  auto source = std::make_shared<Tokenizer>(Tokenizer::load(model_file(dir, "tokenizer.model")));
  std::shared_ptr<Tokenizer> target;
  if (!config_optional(config_get<nlohmann::json>(config, "tokenizer", file), "joint", file, true))
    target = std::make_shared<Tokenizer>(Tokenizer::load(model_file(dir, "target_tokenizer.model")));
  if (source->vocab_size() != options.source_vocab() ||
      (target ? target->vocab_size() : source->vocab_size()) != options.target_vocab())
    throw InputError(dir, 0, "the tokenizers' vocabularies differ from config.json's (mismatched model files)");
  Seq2Seq model(options);
  load_weights(*model, model_file(dir, "weights.pt"), verify);
  model->eval();
  const int64_t max_source_tokens =
      config.contains("max_source_tokens")
          ? config_get_in(config, "max_source_tokens", file, int64_t{1}, int64_t{1000000})
          : kMaxSourceTokens;
  return TranslationModel(std::move(config), std::move(model), std::move(source), std::move(target),
                          max_source_tokens);
}

std::vector<int64_t> TranslationModel::encode_source(const std::string& text) const {
  return source_ids(*source_, text, max_source_tokens_);
}

std::vector<int64_t> TranslationModel::encode_target(const std::string& text) const {
  return target_ids(target_tokenizer(), text);
}

std::vector<Translation> TranslationModel::translate(const std::vector<std::string>& sentences,
                                                     const DecodingOptions& options, int64_t batch_size,
                                                     const std::function<void(int64_t)>& progress) {
  std::vector<std::vector<int64_t>> ids;
  std::vector<int64_t> lengths(sentences.size());
  for (size_t i = 0; i < sentences.size(); ++i)
    ids.push_back(source_ids(*source_, sentences[i], max_source_tokens_, &lengths[i]));
  const auto hyps = translate_ids(model_, ids, options, batch_size, progress);
  std::vector<Translation> out;
  for (size_t i = 0; i < sentences.size(); ++i) {
    Translation t;
    t.source_length = lengths[i];
    t.hypotheses = hyps[i];
    for (const auto& h : t.hypotheses) t.texts.push_back(target_tokenizer().decode(h.tokens));
    for (auto id : ids[i]) t.source_pieces.push_back(source_->id_to_piece(id));
    out.push_back(std::move(t));
  }
  return out;
}

TranslationScores evaluate_translation(TranslationModel& model, const std::string& src, const std::string& ref,
                                       const DecodingOptions& options, bool lowercase, int64_t batch_size,
                                       bool progress) {
  const auto pairs = read_parallel(src, ref);
  std::vector<std::string> sources, refs, hyps;
  for (const auto& p : pairs) {
    sources.push_back(p.source);
    refs.push_back(p.target);
  }
  CountProgress bar(!progress, "sentences", static_cast<int64_t>(sources.size()));
  for (const auto& t : model.translate(sources, options, batch_size, [&](int64_t n) { bar.add(n); }))
    hyps.push_back(t.texts.front());
  TranslationScores s;
  BleuOptions b;
  b.lowercase = lowercase;
  s.bleu = corpus_bleu(hyps, refs, b);
  s.chrf = corpus_chrf(hyps, refs);
  s.sentences = static_cast<int64_t>(pairs.size());
  return s;
}

namespace {

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

std::string attention_svg(const std::vector<std::string>& source, const std::vector<std::string>& target,
                          const std::vector<std::vector<float>>& attention) {
  if (attention.size() != target.size())
    throw std::invalid_argument("attention_svg: " + std::to_string(attention.size()) + " attention rows for " +
                                std::to_string(target.size()) + " target pieces");
  constexpr int kCell = 28, kLeft = 120, kTop = 120;
  const int width = kLeft + kCell * static_cast<int>(source.size()) + 10;
  const int height = kTop + kCell * static_cast<int>(target.size()) + 10;
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (size_t s = 0; s < source.size(); ++s) {
    const int x = kLeft + kCell * static_cast<int>(s) + kCell / 2;
    svg << "<text transform=\"translate(" << x << "," << kTop - 6 << ") rotate(-60)\">" << xml_escape(source[s])
        << "</text>\n";
  }
  for (size_t t = 0; t < target.size(); ++t) {
    if (attention[t].size() != source.size())
      throw std::invalid_argument("attention_svg: row " + std::to_string(t) + " has " +
                                  std::to_string(attention[t].size()) + " weights for " +
                                  std::to_string(source.size()) + " source pieces");
    const int y = kTop + kCell * static_cast<int>(t);
    svg << "<text x=\"" << kLeft - 6 << "\" y=\"" << y + kCell / 2 + 4 << "\" text-anchor=\"end\">"
        << xml_escape(target[t]) << "</text>\n";
    for (size_t s = 0; s < source.size(); ++s) {
      const double w = std::clamp(static_cast<double>(attention[t][s]), 0.0, 1.0);
      const int shade = static_cast<int>(std::lround(255 * (1 - w)));
      svg << "<rect x=\"" << kLeft + kCell * static_cast<int>(s) << "\" y=\"" << y << "\" width=\"" << kCell
          << "\" height=\"" << kCell << "\" fill=\"rgb(" << shade << "," << shade << ",255)\"><title>" << std::fixed
          << std::setprecision(3) << w << "</title></rect>\n";
    }
  }
  svg << "</svg>\n";
  return svg.str();
}

// ---------------------------------------------------------------- translating files

namespace {

double rounded(double x) { return std::round(x * 1e4) / 1e4; }

/// The JSON record of one sentence's translation: n-best with scores and
/// pieces, and the attention weights when asked.
nlohmann::json sentence_json(const TranslationModel& model, const std::string& source, const Translation& t,
                             bool attention_weights) {
  nlohmann::json n = nlohmann::json::array();
  for (size_t k = 0; k < t.hypotheses.size(); ++k) {
    const auto& h = t.hypotheses[k];
    std::vector<std::string> pieces;
    for (auto id : h.tokens) pieces.push_back(model.target_tokenizer().id_to_piece(id));
    nlohmann::json hyp = {{"text", t.texts[k]}, {"score", rounded(h.score)}, {"log_prob", rounded(h.log_prob)},
                          {"tokens", pieces},   {"finished", h.finished}};
    if (attention_weights) {
      // Attention weights to 4 decimals: what a reader or a plot can use, a quarter of the bytes.
      nlohmann::json attention = nlohmann::json::array();
      for (const auto& row : h.attention) {
        nlohmann::json r = nlohmann::json::array();
        for (float w : row) r.push_back(rounded(static_cast<double>(w)));
        attention.push_back(std::move(r));
      }
      hyp["attention"] = std::move(attention);
    }
    n.push_back(std::move(hyp));
  }
  return {{"source", source}, {"source_tokens", t.source_pieces}, {"source_truncated", t.truncated()}, {"nbest", n}};
}

/// The k-th hypothesis of each sentence of a line (the last one where a
/// sentence has fewer), joined, and the sum of their scores.
std::pair<std::string, double> joined_hypothesis(const std::vector<const Translation*>& sentences, size_t k) {
  std::string text;
  double score = 0;
  for (const auto* t : sentences) {
    const size_t i = std::min(k, t->texts.size() - 1);
    if (!text.empty() && !t->texts[i].empty()) text += ' ';
    text += t->texts[i];
    score += t->hypotheses[i].score;
  }
  return {text, score};
}

/// A line's JSON record: its source, the joined best translation, and each
/// sentence's n-best.
nlohmann::json line_json(const TranslationModel& model, const std::string& source,
                         const std::vector<std::string>& sentences, const std::vector<const Translation*>& translations,
                         bool attention_weights) {
  nlohmann::json record = {{"source", source}};
  record["translation"] = translations.empty() ? std::string() : joined_hypothesis(translations, 0).first;
  record["sentences"] = nlohmann::json::array();
  for (size_t s = 0; s < translations.size(); ++s)
    record["sentences"].push_back(sentence_json(model, sentences[s], *translations[s], attention_weights));
  return record;
}

}  // namespace

std::vector<nlohmann::json> translation_records(TranslationModel& model, const std::vector<std::string>& lines,
                                                const TranslateFilesOptions& options) {
  std::vector<std::vector<std::string>> parts;
  std::vector<std::string> all;
  for (const auto& l : lines) {
    parts.push_back(split_sentences(l));
    all.insert(all.end(), parts.back().begin(), parts.back().end());
  }
  const auto translations = model.translate(all, options.decoding, options.batch_size);
  std::vector<nlohmann::json> records;
  size_t next = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::vector<const Translation*> mine;
    for (size_t s = 0; s < parts[i].size(); ++s) mine.push_back(&translations[next++]);
    records.push_back(line_json(model, lines[i], parts[i], mine, options.attention_weights));
  }
  return records;
}

int translate_files(TranslationModel& model, const std::vector<std::string>& inputs,
                    const TranslateFilesOptions& options, std::ostream& out, std::ostream& err) {
  if (!options.svg_dir.empty()) {
    // One new directory at most: a mistyped path must not create a tree.
    const auto& dir = options.svg_dir;
    if (file_exists(dir) && !is_directory(dir))
      throw InputError(dir, 0, "--attention-svg: exists and is not a directory");
    auto path = std::filesystem::path(dir);
    if (!path.has_filename()) path = path.parent_path();  // "att/"
    const auto parent = path.parent_path();
    if (!file_exists(dir) && !parent.empty() && !is_directory(parent.string()))
      throw InputError(dir, 0, "--attention-svg: its parent directory " + parent.string() + " does not exist");
    if (!file_exists(dir) && ::mkdir(dir.c_str(), 0755) != 0)
      throw WriteError(dir + "/", std::strerror(errno));
  }
  const std::string prefix = options.error_prefix.empty() ? "" : options.error_prefix + ": ";
  int64_t sentence = 0;  // numbers the attention heatmaps across all inputs
  CountProgress bar(!options.progress, "lines");
  return for_each_input(inputs, options.error_prefix, err, [&](const std::string& path) {
    const auto batch_lines = static_cast<size_t>(options.batch_size * 8);
    stream_lines(path, batch_lines, [&](const std::vector<NumberedLine>& lines) {
      // Every line's sentences (the model was trained on one sentence at a
      // time), translated together; a blank line has none.
      std::vector<std::vector<std::string>> parts;
      std::vector<std::string> all;
      for (const auto& l : lines) {
        parts.push_back(split_sentences(l.text));
        all.insert(all.end(), parts.back().begin(), parts.back().end());
      }
      const auto translations = model.translate(all, options.decoding, options.batch_size);
      size_t next = 0;
      for (size_t i = 0; i < lines.size(); ++i) {
        std::vector<const Translation*> mine;
        for (size_t s = 0; s < parts[i].size(); ++s, ++next) {
          const auto& t = translations[next];
          mine.push_back(&t);
          ++sentence;
          if (t.truncated())
            err << prefix << "warning: " << (path == "-" ? "<stdin>" : path) << ":" << lines[i].number << ": "
                << t.source_length << " pieces; only the first " << t.source_pieces.size()
                << " (the model's limit) are translated\n";
          if (!options.svg_dir.empty()) {
            const auto& h = t.hypotheses.front();
            std::vector<std::string> pieces;
            for (auto id : h.tokens) pieces.push_back(model.target_tokenizer().id_to_piece(id));
            if (h.finished) pieces.push_back("</s>");
            atomic_write(options.svg_dir + "/" + std::to_string(sentence) + ".svg",
                         attention_svg(t.source_pieces, pieces, h.attention));
          }
        }
        if (options.format == "text") {
          const size_t k_max = mine.empty() ? 1 : static_cast<size_t>(options.decoding.nbest);
          for (size_t k = 0; k < k_max; ++k) {
            const auto [text, score] = joined_hypothesis(mine, k);
            if (options.decoding.nbest > 1) out << format_fixed(score, 4) << '\t';
            out << text << '\n';
          }
          continue;
        }
        out << line_json(model, lines[i].text, parts[i], mine, options.attention_weights).dump() << '\n';
      }
      out.flush();
    }, &bar, &err, options.error_prefix);
  });
}

}  // namespace cellstate
