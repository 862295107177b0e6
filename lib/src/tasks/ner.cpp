#include "cellstate/tasks/ner.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "cellstate/data/batching.h"
#include "cellstate/data/word_split.h"
#include "cellstate/nn/concurrent.h"
#include "cellstate/tasks/finetune.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/util/interrupt.h"
#include "cellstate/tasks/predict.h"
#include "cellstate/tasks/task.h"
#include "cellstate/util/io.h"
#include "cellstate/util/progress.h"
#include "cellstate/util/random.h"
#include "cellstate/util/text.h"

namespace cellstate {

namespace {

constexpr const char* kTask = "ner";
constexpr int64_t kPad = 0;
constexpr int64_t kUnk = 1;

/// The word embedding's key: ASCII lower-cased, digits as 0.
std::string normalize_word(const std::string& word) {
  std::string out = word;
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    else if (c >= '0' && c <= '9') c = '0';
  }
  return out;
}

using Vocabulary = std::unordered_map<std::string, int64_t>;

/// The first and last `keep / 2` elements of `v` when it is longer than
/// `keep` (a word's prefix and suffix carry what its characters tell).
template <typename T>
void keep_ends(std::vector<T>& v, size_t keep) {
  if (v.size() <= keep) return;
  const size_t half = keep / 2;
  v.erase(v.begin() + static_cast<std::ptrdiff_t>(half), v.end() - static_cast<std::ptrdiff_t>(keep - half));
}

/// One token's columns of a TaggerInput.
struct TokenCodes {
  int64_t word = kUnk;
  int64_t casing = 0;
  std::vector<int64_t> chars;   // empty when there is no character model
  std::vector<int64_t> pieces;  // empty when there are no piece features
};

/// A token's codes: its word (normalised; 0 pad, 1 unk), casing, characters
/// (code points; 0 pad, 1 unk; empty map: no character model) and
/// SentencePiece pieces (null: none). Characters and pieces are capped at
/// kMaxWordChars and kMaxWordPieces (the token's two ends), so the cost of a
/// sentence stays linear in its words whatever one word's length.
TokenCodes encode_token(const std::string& t, const Vocabulary& words, const Vocabulary& chars,
                        const Tokenizer* pieces) {
  TokenCodes out;
  const auto w = words.find(normalize_word(t));
  out.word = w == words.end() ? kUnk : w->second;
  out.casing = static_cast<int64_t>(word_casing(t));
  if (!chars.empty()) {
    for (const auto& ch : utf8_chars(t)) {
      const auto it = chars.find(ch);
      out.chars.push_back(it == chars.end() ? kUnk : it->second);
    }
    if (out.chars.empty()) out.chars.push_back(kUnk);
    keep_ends(out.chars, static_cast<size_t>(kMaxWordChars));
  }
  if (pieces) {
    out.pieces = pieces->encode(t);
    if (out.pieces.empty()) out.pieces.push_back(Tokenizer::kUnkId);
    keep_ends(out.pieces, static_cast<size_t>(kMaxWordPieces));
  }
  return out;
}

/// Codes already computed, by token: a text repeats most of its tokens, and
/// a token's SentencePiece encoding costs about a microsecond (most of
/// encoding a sentence), a lookup here a hash of the token.
using TokenCache = std::unordered_map<std::string, TokenCodes>;

/// Turns tokens into a TaggerInput, one encode_token() per distinct token
/// (per call, or across calls with a `cache` the caller keeps).
TaggerInput encode_tokens(const std::vector<std::string>& tokens, const Vocabulary& words, const Vocabulary& chars,
                          const Tokenizer* pieces, TokenCache* cache = nullptr) {
  TokenCache local;
  if (!cache) cache = &local;
  TaggerInput in;
  for (const auto& t : tokens) {
    auto it = cache->find(t);
    if (it == cache->end()) it = cache->emplace(t, encode_token(t, words, chars, pieces)).first;
    const TokenCodes& c = it->second;
    in.words.push_back(c.word);
    in.casing.push_back(c.casing);
    if (!chars.empty()) in.chars.push_back(c.chars);
    if (pieces) in.pieces.push_back(c.pieces);
  }
  return in;
}

std::vector<std::string> tag_names(const std::vector<int64_t>& ids, const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (auto id : ids) out.push_back(names.at(static_cast<size_t>(id)));
  return out;
}

/// The entities of the decoded tags of a batch, with their probabilities:
/// for the CRF all spans at the cost of one forward-backward pass.
std::vector<std::vector<Entity>> batch_entities(SequenceTaggerImpl& tagger, const torch::Tensor& emissions,
                                                const torch::Tensor& mask,
                                                const std::vector<std::vector<int64_t>>& decoded,
                                                const std::vector<std::string>& names, TagScheme scheme,
                                                bool confidences) {
  std::vector<std::vector<Entity>> out(decoded.size());
  std::vector<CRFImpl::SpanQuery> queries;
  std::vector<Entity*> queried;
  torch::Tensor probs;
  if (confidences && !tagger.crf) probs = torch::softmax(emissions, 2);
  for (size_t b = 0; b < decoded.size(); ++b) {
    const auto& ids = decoded[b];
    for (const auto& span : tags_to_spans(tag_names(ids, names), scheme)) out[b].push_back({span, 0.0});
    if (!confidences) continue;
    for (auto& e : out[b]) {
      std::vector<int64_t> segment(ids.begin() + e.span.begin, ids.begin() + e.span.end);
      if (tagger.crf) {
        // After the span no tag may continue it (I-X in BIO; IOBES spans end in E/S).
        CRFImpl::SpanQuery q{static_cast<int64_t>(b), e.span.begin, segment, {}};
        if (scheme != TagScheme::kIOBES)
          for (size_t k = 0; k < names.size(); ++k)
            if (names[k] == "I-" + e.span.type) q.not_next.push_back(static_cast<int64_t>(k));
        queries.push_back(std::move(q));
        queried.push_back(&e);
      } else {
        double p = 1;
        for (int64_t t = e.span.begin; t < e.span.end; ++t)
          p *= probs[static_cast<int64_t>(b)][t][segment[static_cast<size_t>(t - e.span.begin)]].item<double>();
        e.confidence = p;
      }
    }
  }
  if (!queries.empty()) {
    const auto p = tagger.crf->span_probabilities(emissions, mask, queries);
    for (size_t k = 0; k < p.size(); ++k) queried[k]->confidence = p[k];
  }
  return out;
}

/// Training for the Trainer: sentences bucketed by length, CRF or softmax loss.
class NerTask : public TrainTask {
 public:
  NerTask(const NerTrainConfig& config, SequenceTagger tagger, std::vector<TaggerInput> train,
          std::vector<std::vector<int64_t>> train_tags, std::vector<char> rare_words,
          std::vector<TaggerInput> dev, std::vector<std::vector<std::string>> dev_gold,
          std::vector<std::string> names, TagScheme scheme, std::string weights_path, ProcessGroup group)
      : config_(config), tagger_(std::move(tagger)), train_(std::move(train)), train_tags_(std::move(train_tags)),
        rare_(std::move(rare_words)), dev_(std::move(dev)), dev_gold_(std::move(dev_gold)), names_(std::move(names)),
        scheme_(scheme), weights_path_(std::move(weights_path)), group_(std::move(group)) {}

  torch::nn::Module& module() override { return *tagger_; }

  int64_t begin_epoch(int64_t epoch) override {
    std::vector<int64_t> lengths;
    for (const auto& s : train_) lengths.push_back(static_cast<int64_t>(s.words.size()));
    BucketOptions b;
    b.batch_size = config_.training.batch_size;
    batches_ = bucket_batches(lengths, b, config_.training.seed, epoch);
    epoch_ = epoch;
    return static_cast<int64_t>(batches_.size());
  }

  StepResult train_step(int64_t index) override {
    const auto& batch = batches_[static_cast<size_t>(index)];
    // Word dropout: a fresh draw per (seed, epoch, batch), so resuming repeats
    // it; drawn for the whole batch on every rank, so a data-parallel rank
    // draws for its shard what one process would.
    DataRng rng(derive_seed(config_.training.seed,
                            static_cast<uint64_t>(epoch_) * 1000003u + static_cast<uint64_t>(index)));
    const auto part = shard_range(static_cast<int64_t>(batch.size()), group_.rank(), group_.size());
    std::vector<int64_t> idx;
    std::vector<TaggerInput> inputs;
    std::vector<const TaggerInput*> ptrs;
    inputs.reserve(static_cast<size_t>(part.size()));
    int64_t T = 0, batch_tokens = 0;
    for (int64_t k = 0; k < static_cast<int64_t>(batch.size()); ++k) {
      const auto i = batch[static_cast<size_t>(k)];
      const bool mine = k >= part.begin && k < part.end;
      const auto& source = train_[static_cast<size_t>(i)];
      batch_tokens += static_cast<int64_t>(source.words.size());
      TaggerInput in;
      if (mine) in = source;
      for (size_t w = 0; w < source.words.size(); ++w) {
        const double u = rng.uniform();
        const bool rare = rare_[static_cast<size_t>(source.words[w])] != 0;
        if (mine && (u < config_.word_dropout || (rare && u < config_.rare_word_dropout))) in.words[w] = kUnk;
      }
      if (!mine) continue;
      idx.push_back(i);
      T = std::max<int64_t>(T, static_cast<int64_t>(in.words.size()));
      inputs.push_back(std::move(in));
    }
    if (idx.empty()) return {};  // nothing of this batch on this rank
    for (const auto& in : inputs) ptrs.push_back(&in);
    auto tags = torch::zeros({static_cast<int64_t>(idx.size()), T}, torch::kInt64);
    int64_t tokens = 0;
    for (size_t k = 0; k < idx.size(); ++k) {
      const auto& t = train_tags_[static_cast<size_t>(idx[k])];
      tags[static_cast<int64_t>(k)].slice(0, 0, static_cast<int64_t>(t.size())).copy_(torch::tensor(t, torch::kInt64));
      tokens += static_cast<int64_t>(t.size());
    }
    auto loss = tagger_->loss(make_tagger_batch(ptrs), tags);
    // The CRF's loss is a mean over sentences, the softmax's over tokens:
    // this rank's share of the batch in the same unit.
    const double share = tagger_->crf
                             ? static_cast<double>(idx.size()) / static_cast<double>(batch.size())
                             : static_cast<double>(tokens) / static_cast<double>(batch_tokens);
    return {loss.item<double>() * share, tokens, share == 1.0 ? loss : loss * share};
  }

  Evaluation evaluate() override {
    std::vector<int64_t> lengths;
    for (const auto& s : dev_) lengths.push_back(static_cast<int64_t>(s.words.size()));
    ChunkScorer scorer(scheme_);
    // The training loss on dev, in its unit (a mean over sentences for the
    // CRF, over tokens for the softmax), over the batches whose every tag the
    // model knows.
    double loss = 0;
    int64_t loss_units = 0;
    std::unordered_map<std::string, int64_t> tag_ids;
    for (size_t k = 0; k < names_.size(); ++k) tag_ids[names_[k]] = static_cast<int64_t>(k);
    for (const auto& b : sorted_batches(lengths, 64)) {
      std::vector<const TaggerInput*> ptrs;
      for (auto i : b) ptrs.push_back(&dev_[static_cast<size_t>(i)]);
      const auto batch = make_tagger_batch(ptrs);
      const auto emissions = tagger_->emissions(batch);
      const auto decoded = tagger_->decode(batch, emissions);
      for (size_t k = 0; k < b.size(); ++k)
        scorer.add(dev_gold_[static_cast<size_t>(b[k])], tag_names(decoded[k], names_));
      auto tags = torch::zeros({static_cast<int64_t>(b.size()), emissions.size(1)}, torch::kInt64);
      bool known = true;
      int64_t tokens = 0;
      for (size_t k = 0; k < b.size() && known; ++k) {
        const auto& gold = dev_gold_[static_cast<size_t>(b[k])];
        for (size_t t = 0; t < gold.size() && known; ++t) {
          const auto it = tag_ids.find(gold[t]);
          known = it != tag_ids.end();
          if (known) tags[static_cast<int64_t>(k)][static_cast<int64_t>(t)] = it->second;
        }
        tokens += static_cast<int64_t>(gold.size());
      }
      if (!known) continue;  // a batch with a tag the model lacks is left out of the loss
      const int64_t units = tagger_->crf ? static_cast<int64_t>(b.size()) : tokens;
      loss += tagger_->loss(batch, tags, emissions).item<double>() * static_cast<double>(units);
      loss_units += units;
    }
    const auto& r = scorer.report();
    nlohmann::json metrics = {{"f1", r.overall.f1()},
                              {"precision", r.overall.precision()},
                              {"recall", r.overall.recall()},
                              {"token_accuracy", r.accuracy()}};
    if (loss_units > 0) metrics["loss"] = loss / static_cast<double>(loss_units);
    for (const auto& [type, c] : r.per_type) metrics["f1_" + type] = c.f1();
    return {r.overall.f1(), metrics};
  }

  void save_best() override { save_weights(*tagger_, weights_path_, config_.half); }

 private:
  const NerTrainConfig& config_;
  SequenceTagger tagger_;
  std::vector<TaggerInput> train_;
  std::vector<std::vector<int64_t>> train_tags_;
  std::vector<char> rare_;  // by word id
  std::vector<TaggerInput> dev_;
  std::vector<std::vector<std::string>> dev_gold_;  // in the model's scheme
  std::vector<std::string> names_;
  TagScheme scheme_;
  std::string weights_path_;
  ProcessGroup group_;
  std::vector<std::vector<int64_t>> batches_;
  int64_t epoch_ = 0;
};

TagScheme resolve_scheme(const std::string& name, const std::vector<ConllSentence>& data) {
  return name == "auto" ? detect_tag_scheme(data) : parse_tag_scheme(name);
}

// Tags of every sentence converted to `to`; a tag that is not O or P-TYPE is
// an InputError naming the file and the sentence's line.
std::vector<std::vector<std::string>> converted_tags(const std::vector<ConllSentence>& data, TagScheme from,
                                                     TagScheme to, const std::string& path) {
  std::vector<std::vector<std::string>> out;
  for (const auto& s : data) {
    try {
      out.push_back(convert_tags(s.tags, from, to));
    } catch (const std::invalid_argument& e) {
      throw InputError(path, s.line, std::string(e.what()) + " (expected O or B-/I-/E-/S-TYPE tags)");
    }
  }
  return out;
}

SequenceTaggerOptions tagger_options(const nlohmann::json& config, const std::string& file, Implementation impl) {
  ModelOptions m;
  m.from_json(config_get<nlohmann::json>(config, "model", file), file);
  const auto t = config_get<nlohmann::json>(config, "tagger", file);
  SequenceTaggerOptions o(config_get_in(t, "word_vocab", file, int64_t{3}, int64_t{10000000}),
                          static_cast<int64_t>(config_get<std::vector<std::string>>(config, "tags", file).size()));
  o.word_embed(m.embed).hidden(m.hidden).layers(m.layers).kind(m.kind()).impl(impl).dropout(m.dropout);
  o.char_vocab(config_get_in(t, "char_vocab", file, int64_t{0}, int64_t{10000000}))
      .char_embed(config_get_in(t, "char_embed", file, int64_t{0}, int64_t{4096}))
      .char_hidden(config_get_in(t, "char_hidden", file, int64_t{1}, int64_t{4096}))
      .piece_vocab(config_get_in(t, "piece_vocab", file, int64_t{0}, int64_t{10000000}))
      .piece_embed(config_get_in(t, "piece_embed", file, int64_t{1}, int64_t{4096}))
      .casing_embed(config_get_in(t, "casing_embed", file, int64_t{0}, int64_t{4096}))
      .crf(config_get<std::string>(t, "decoder", file) == "crf");
  return o;
}

}  // namespace

InheritedOptions ner_inherited_options(const std::string& init_from) {
  const InitSource source(kTask, init_from);
  const auto& c = source.config();
  const auto file = source.config_file();
  auto o = common_inherited_options(source, true, false);
  const auto t = config_get<nlohmann::json>(c, "tagger", file);
  o.fixed["tag-scheme"] = config_get<std::string>(c, "tag_scheme", file);
  o.fixed["decoder"] = config_get<std::string>(t, "decoder", file);
  o.fixed["char-embed"] = config_get<int64_t>(t, "char_embed", file);
  o.fixed["char-hidden"] = config_get<int64_t>(t, "char_hidden", file);
  o.fixed["piece-vocab"] = config_get<int64_t>(t, "piece_vocab", file);
  o.fixed["piece-embed"] = config_get<int64_t>(t, "piece_embed", file);
  o.fixed["casing-embed"] = config_get<int64_t>(t, "casing_embed", file);
  const auto tr = config_get<nlohmann::json>(c, "training", file);
  o.defaults["rare-word-dropout"] = config_optional(tr, "rare_word_dropout", file, 0.5);
  o.defaults["word-dropout"] = config_optional(tr, "word_dropout", file, 0.0);
  return o;
}

TagScheme detect_tag_scheme(const std::vector<ConllSentence>& sentences) {
  bool iob1 = false;
  for (const auto& s : sentences) {
    std::string previous = "O";
    for (const auto& t : s.tags) {
      if (t.size() > 2 && (t[0] == 'E' || t[0] == 'S') && t[1] == '-') return TagScheme::kIOBES;
      if (t.size() > 2 && t[0] == 'I' && t[1] == '-') {
        const std::string type = t.substr(2);
        if (previous == "O" || previous.size() < 2 || previous.substr(2) != type) iob1 = true;
      }
      previous = t;
    }
  }
  return iob1 ? TagScheme::kIOB1 : TagScheme::kIOB2;
}

// ---------------------------------------------------------------- training

TrainResult train_ner(const NerTrainConfig& config, const ProcessGroup& group) {
  const InterruptGuard interrupts;
  ModelTransaction transaction(config.model.dir, kTask, write_options(config.training), group);
  const std::string dir = transaction.path();
  const TaskLog log(config.runtime.quiet);
  ConllOptions conll = config.conll;
  conll.has_tags = true;
  ReadStats train_stats, dev_stats;
  const auto train = read_conll(config.train_path, conll, &train_stats);
  const auto dev = read_conll(config.dev_path, conll, &dev_stats);
  if (train.empty()) throw InputError(config.train_path, 0, "no sentences (empty input)");
  if (dev.empty()) throw InputError(config.dev_path, 0, "no sentences (empty input)");
  const TagScheme train_scheme = resolve_scheme(config.data_scheme, train);
  const TagScheme dev_scheme = resolve_scheme(config.data_scheme, dev);
  const TagScheme scheme = parse_tag_scheme(config.tag_scheme);
  const auto train_tags = converted_tags(train, train_scheme, scheme, config.train_path);
  const auto dev_tags = converted_tags(dev, dev_scheme, scheme, config.dev_path);
  int64_t train_tokens = 0, long_words = 0;
  for (const auto& s : train) {
    train_tokens += static_cast<int64_t>(s.tokens.size());
    for (const auto& t : s.tokens) long_words += utf8_length(t) > kMaxWordChars;
  }
  if (long_words > 0)
    log("warning: " + std::to_string(long_words) + " training words longer than " + std::to_string(kMaxWordChars) +
        " characters: their character features read only their first and last " +
        std::to_string(kMaxWordChars / 2));
  log("train: " + std::to_string(train.size()) + " sentences, " + std::to_string(train_tokens) + " tokens (" +
      to_string(train_scheme) + "); dev: " + std::to_string(dev.size()) + " sentences (" + to_string(dev_scheme) +
      "); the model tags in " + to_string(scheme));

  // A fine-tuning run's source (--init-from): its vocabularies, tags and weights.
  std::optional<InitSource> source;
  std::optional<NerModel> source_model;
  if (!config.training.init_from.empty()) {
    source.emplace(kTask, config.training.init_from);
    source_model.emplace(NerModel::load(source->dir(), config.model.implementation(), true));
  }

  // Tags: O first, then the others sorted (a fine-tuned model's: its source's and the data's).
  std::vector<std::string> names{"O"};
  {
    std::set<std::string> seen;
    if (source_model)
      for (const auto& t : source_model->tags())
        if (t != "O") seen.insert(t);
    for (const auto& s : train_tags)
      for (const auto& t : s)
        if (t != "O") seen.insert(t);
    names.insert(names.end(), seen.begin(), seen.end());
  }
  std::unordered_map<std::string, int64_t> tag_ids;
  for (size_t k = 0; k < names.size(); ++k) tag_ids[names[k]] = static_cast<int64_t>(k);

  // Vocabularies from the training data.
  std::map<std::string, int64_t> word_counts, char_counts;
  for (const auto& s : train)
    for (const auto& t : s.tokens) {
      ++word_counts[normalize_word(t)];
      for (const auto& c : utf8_chars(t)) ++char_counts[c];
    }
  std::vector<std::string> words{"<pad>", "<unk>"}, chars{"<pad>", "<unk>"};
  Vocabulary word_ids, char_ids;
  std::vector<char> rare{0, 0};
  if (source) {
    // The source's vocabularies, unchanged: its embeddings' rows.
    words.clear();
    LineReader reader(model_file(source->dir(), config_get<std::string>(source->config(), "words_file",
                                                                        source->config_file())));
    std::string line;
    while (reader.next(line)) words.push_back(line);
    rare.assign(words.size(), 0);
    int64_t unknown = 0, total = 0;
    for (size_t k = 0; k < words.size(); ++k) word_ids[words[k]] = static_cast<int64_t>(k);
    for (const auto& [w, n] : word_counts) {
      total += n;
      const auto it = word_ids.find(w);
      if (it == word_ids.end()) unknown += n;
      else rare[static_cast<size_t>(it->second)] = n == 1;
    }
    log(coverage_message(unknown, total, "training words", *source));
    chars = config_get<std::vector<std::string>>(source->config(), "chars", source->config_file());
  } else {
    for (const auto& [w, n] : word_counts)
      if (n >= config.min_word_count) {
        word_ids[w] = static_cast<int64_t>(words.size());
        words.push_back(w);
        rare.push_back(n == 1);
      }
  }
  if (words.size() <= 2) {
    int64_t most = 0;
    for (const auto& [w, n] : word_counts) most = std::max(most, n);
    throw std::invalid_argument("--min-word-count " + std::to_string(config.min_word_count) +
                                ": no training word occurs that often (the most frequent occurs " +
                                std::to_string(most) + " times), so the model would know no word");
  }
  if (source) {
    for (size_t k = 0; k < chars.size(); ++k) char_ids[chars[k]] = static_cast<int64_t>(k);
  } else if (config.char_embed > 0) {
    for (const auto& [c, n] : char_counts) {
      char_ids[c] = static_cast<int64_t>(chars.size());
      chars.push_back(c);
    }
  }
  interrupts.check();
  std::optional<Tokenizer> pieces;
  if (source && config.piece_vocab > 0) {
    pieces = Tokenizer::load(source->copy_file("tokenizer.model", dir, group));
  } else if (config.piece_vocab > 0) {
    std::vector<std::string> texts;
    for (const auto& s : train) {
      std::string line;
      for (const auto& t : s.tokens) line += (line.empty() ? "" : " ") + t;
      texts.push_back(std::move(line));
    }
    TokenizerTrainOptions spm;
    spm.vocab_size = config.piece_vocab;
    pieces = train_model_tokenizer(dir, config.training.resume, texts, spm, "tokenizer.model", group);
  }
  {
    std::string list;
    for (const auto& w : words) list += w + "\n";
    atomic_write(dir + "/words.txt", list);
  }
  log("vocabulary: " + std::to_string(words.size()) + " words, " + std::to_string(chars.size()) + " characters" +
      (pieces ? ", " + std::to_string(pieces->vocab_size()) + " pieces" : std::string()) + "; " +
      std::to_string(names.size()) + " tags");

  std::vector<TaggerInput> train_in, dev_in;
  std::vector<std::vector<int64_t>> train_y;
  TokenCache cache;
  for (size_t i = 0; i < train.size(); ++i) {
    train_in.push_back(encode_tokens(train[i].tokens, word_ids, char_ids, pieces ? &*pieces : nullptr, &cache));
    std::vector<int64_t> y;
    for (const auto& t : train_tags[i]) y.push_back(tag_ids.at(t));
    train_y.push_back(std::move(y));
  }
  for (const auto& s : dev)
    dev_in.push_back(encode_tokens(s.tokens, word_ids, char_ids, pieces ? &*pieces : nullptr, &cache));

  auto json = new_model_config(kTask);
  json["model"] = config.model.to_json();
  json["tagger"] = {{"word_vocab", words.size()},        {"char_vocab", config.char_embed > 0 ? chars.size() : 0},
                    {"char_embed", config.char_embed},   {"char_hidden", config.char_hidden},
                    {"piece_vocab", pieces ? pieces->vocab_size() : 0},
                    {"piece_embed", config.piece_embed}, {"casing_embed", config.casing_embed},
                    {"decoder", config.decoder}};
  json["tags"] = names;
  json["tag_scheme"] = to_string(scheme);
  json["chars"] = config.char_embed > 0 ? chars : std::vector<std::string>{};
  json["words_file"] = "words.txt";
  json["weights"] = weights_entry(config.half);
  json["training"] = training_record(config.training);
  json["training"]["min_word_count"] = config.min_word_count;
  json["training"]["rare_word_dropout"] = config.rare_word_dropout;
  json["training"]["word_dropout"] = config.word_dropout;
  json["data"] = {{"train", config.train_path},   {"dev", config.dev_path},
                  {"train_sentences", train.size()}, {"dev_sentences", dev.size()},
                  {"train_scheme", to_string(train_scheme)}};
  if (source) json["init_from"] = source->record();
  write_model_config(dir, json);
  interrupts.check();

  torch::manual_seed(config.training.seed);
  SequenceTagger tagger(tagger_options(json, dir + "/config.json", config.model.implementation()));
  if (source_model) {
    std::string added;
    for (const auto& t : names)
      if (std::find(source_model->tags().begin(), source_model->tags().end(), t) == source_model->tags().end())
        added += " " + t;
    log("fine-tuning " + source->dir() + " (" + std::to_string(source_model->tags().size()) + " tags" +
        (added.empty() ? std::string(")") : "; new:" + added + ")"));
    // The output layer's and the CRF's entries of shared tags are the source's.
    std::vector<LabelledTensor> by_tag = {{"output.weight", {0}}, {"output.bias", {0}}};
    if (tagger->crf)
      for (const char* n : {"transitions", "allowed"}) by_tag.push_back({std::string("crf.") + n, {0, 1}});
    if (tagger->crf)
      for (const char* n : {"start_transitions", "end_transitions", "allowed_start", "allowed_end"})
        by_tag.push_back({std::string("crf.") + n, {0}});
    copy_weights(*source_model->tagger(), *tagger, by_tag, label_mapping(source_model->tags(), names),
                 source->config_file());
    source_model.reset();
    const FreezeGroups groups{
        {"word_embedding.", "char_embedding.", "char_rnn.", "piece_embedding.", "casing_embedding."}, "rnn.",
        config.model.layers};
    const auto frozen = apply_freeze(*tagger, config.training.freeze, groups);
    if (!frozen.empty()) log(frozen);
  }
  if (tagger->crf) tagger->crf->set_constraints(tag_constraints(names, scheme));
  log("model with " + std::to_string(count_parameters(*tagger)) + " parameters: words " + std::to_string(config.model.embed) +
      (config.char_embed > 0 ? ", char BiLSTM " + std::to_string(config.char_hidden) + "x2" : std::string()) +
      (pieces ? ", pieces " + std::to_string(config.piece_embed) : std::string()) +
      (config.casing_embed > 0 ? ", casing" : "") + " -> Bi" + config.model.rnn + " (" + config.model.impl + ") " +
      std::to_string(config.model.layers) + "x" + std::to_string(config.model.hidden) + "x2 -> " + config.decoder);

  std::vector<std::vector<std::string>> gold = dev_tags;
  NerTask task(config, tagger, std::move(train_in), std::move(train_y), std::move(rare), std::move(dev_in),
               std::move(gold), names, scheme, dir + "/weights.pt", group);
  const auto result = Trainer(TrainerOptions::of(config.training, dir, "F1", config.runtime.quiet), group).fit(task);
  if (result.interrupted() || !group.main()) return result;
  if (result.already_finished && transaction.resuming_finished()) {
    log.always(already_finished_message(transaction.target(), result));
    return result;
  }
  json["results"] = training_results(result, "dev_f1");
  write_model_config(dir, json);
  transaction.commit();
  log("dev F1 " + format_fixed(result.best_score, 2) + " at epoch " + std::to_string(result.best_epoch) +
      "; model in " + transaction.target());
  return result;
}

// ---------------------------------------------------------------- loading and tagging

NerModel::NerModel(nlohmann::json config, SequenceTagger tagger, std::vector<std::string> tags, TagScheme scheme,
                   std::vector<std::string> words, std::vector<std::string> chars, std::optional<Tokenizer> pieces)
    : config_(std::move(config)), tagger_(std::move(tagger)), tags_(std::move(tags)), scheme_(scheme),
      pieces_(std::move(pieces)) {
  for (size_t k = 2; k < words.size(); ++k) words_[words[k]] = static_cast<int64_t>(k);
  for (size_t k = 2; k < chars.size(); ++k) chars_[chars[k]] = static_cast<int64_t>(k);
}

NerModel NerModel::load(const std::string& dir, std::optional<Implementation> impl, bool verify) {
  auto config = read_model_config(dir, kTask, verify);
  const std::string file = dir + "/config.json";
  const Implementation chosen = model_implementation(config, file, impl);
  const auto options = tagger_options(config, file, chosen);
  const auto tags = config_get<std::vector<std::string>>(config, "tags", file);
  TagScheme scheme;
  try {
    scheme = parse_tag_scheme(config_get<std::string>(config, "tag_scheme", file));
  } catch (const std::invalid_argument& e) {
    throw_config_error(file, e.what());
  }
  std::vector<std::string> words;
  {
    LineReader reader(model_file(dir, config_get<std::string>(config, "words_file", file)));
    std::string line;
    while (reader.next(line)) words.push_back(line);
  }
  if (static_cast<int64_t>(words.size()) != options.word_vocab())
    throw InputError(dir + "/words.txt", 0,
                     "has " + std::to_string(words.size()) + " words, config.json says " +
                         std::to_string(options.word_vocab()) + " (mismatched model files)");
  const auto chars = config_get<std::vector<std::string>>(config, "chars", file);
  if (static_cast<int64_t>(chars.size()) != options.char_vocab())
    throw_config_error(file, "\"chars\" has " + std::to_string(chars.size()) + " entries, expected " +
                                 std::to_string(options.char_vocab()));
  std::optional<Tokenizer> pieces;
  if (options.piece_vocab() > 0) {
    pieces = Tokenizer::load(model_file(dir, "tokenizer.model"));
    if (pieces->vocab_size() != options.piece_vocab())
      throw InputError(dir + "/tokenizer.model", 0,
                       "has " + std::to_string(pieces->vocab_size()) + " pieces, config.json says " +
                           std::to_string(options.piece_vocab()) + " (mismatched model files)");
  }
  if (options.char_vocab() > 0 && options.char_embed() < 1)
    throw_config_error(file, "\"char_embed\" must be at least 1 when \"char_vocab\" is not 0, got " +
                                 std::to_string(options.char_embed()));
  if (tags.size() < 2 || std::set<std::string>(tags.begin(), tags.end()).size() != tags.size())
    throw_config_error(file, "\"tags\" must list at least two distinct tags");
  TagConstraints constraints;
  try {
    constraints = tag_constraints(tags, scheme);
  } catch (const std::invalid_argument& e) {
    throw_config_error(file, std::string("\"tags\": ") + e.what());
  }
  SequenceTagger tagger(options);
  if (tagger->crf) tagger->crf->set_constraints(constraints);
  load_weights(*tagger, model_file(dir, "weights.pt"), verify);
  tagger->eval();
  return NerModel(std::move(config), std::move(tagger), tags, scheme, std::move(words), chars, std::move(pieces));
}

TaggerInput NerModel::encode(const std::vector<std::string>& tokens) const {
  return encode_tokens(tokens, words_, chars_, pieces_ ? &*pieces_ : nullptr);
}

std::vector<TaggedSentence> NerModel::tag(const std::vector<std::vector<std::string>>& sentences, bool confidences,
                                          int64_t batch_size, const std::function<void(int64_t)>& progress) {
  torch::NoGradGuard no_grad;
  std::vector<TaggedSentence> out(sentences.size());
  std::vector<TaggerInput> inputs;
  std::vector<int64_t> lengths;
  TokenCache cache;
  for (const auto& s : sentences) {
    if (s.empty()) throw std::invalid_argument("NerModel::tag: an empty sentence");
    inputs.push_back(encode_tokens(s, words_, chars_, pieces_ ? &*pieces_ : nullptr, &cache));
    lengths.push_back(static_cast<int64_t>(s.size()));
  }
  // Batches at once, one thread each (nn/concurrent.h): a batch's work
  // outside the products (embeddings, the character features, the CRF's
  // passes) is serial, and a batch of 32 sentences is too small to split
  // its 200-wide products well, so batches share the cores better than a
  // batch does. One batch (a single sentence) keeps every thread.
  const auto batches = sorted_batches(lengths, batch_size);
  std::mutex progress_mutex;
  run_concurrently(static_cast<int64_t>(batches.size()), [&](int64_t n) {
    const auto& b = batches[static_cast<size_t>(n)];
    std::vector<const TaggerInput*> ptrs;
    for (auto i : b) ptrs.push_back(&inputs[static_cast<size_t>(i)]);
    const auto batch = make_tagger_batch(ptrs);
    const auto e = tagger_->emissions(batch);
    const auto decoded = tagger_->decode(batch, e);
    auto entities = batch_entities(*tagger_, e, batch.mask, decoded, tags_, scheme_, confidences);
    for (size_t k = 0; k < b.size(); ++k) {
      auto& t = out[static_cast<size_t>(b[k])];
      t.tags = tag_names(decoded[k], tags_);
      t.entities = std::move(entities[k]);
    }
    if (progress) {
      const std::lock_guard<std::mutex> lock(progress_mutex);
      progress(static_cast<int64_t>(b.size()));
    }
  });
  return out;
}

// ---------------------------------------------------------------- evaluation

ChunkReport evaluate_ner(NerModel& model, const std::string& path, const ConllOptions& conll,
                         const std::string& data_scheme, const std::string& output_path, bool progress) {
  ConllOptions o = conll;
  o.has_tags = true;
  const auto data = read_conll(path, o);
  if (data.empty()) throw InputError(path, 0, "no sentences (empty input)");
  const TagScheme scheme = resolve_scheme(data_scheme, data);
  converted_tags(data, scheme, model.scheme(), path);  // checks every tag
  std::vector<std::vector<std::string>> sentences;
  for (const auto& s : data) sentences.push_back(s.tokens);
  CountProgress bar(!progress, "sentences", static_cast<int64_t>(sentences.size()));
  const auto tagged = model.tag(sentences, false, 32, [&](int64_t n) { bar.add(n); });
  ChunkScorer scorer(scheme);
  std::ostringstream conlleval;
  for (size_t i = 0; i < data.size(); ++i) {
    const auto predicted = convert_tags(tagged[i].tags, model.scheme(), scheme);
    scorer.add(data[i].tags, predicted);
    for (size_t t = 0; t < predicted.size(); ++t)
      conlleval << data[i].tokens[t] << ' ' << data[i].tags[t] << ' ' << predicted[t] << '\n';
    conlleval << '\n';
  }
  if (!output_path.empty()) atomic_write(output_path, conlleval.str());
  return scorer.report();
}

// ---------------------------------------------------------------- prediction

namespace {

/// One unit of input with its sentences (tokens with offsets when raw).
struct Document {
  std::string source;
  int64_t line = 0;
  std::string text;                         // raw input only
  std::vector<TokenizedSentence> sentences;
};

/// One sentence's tokens with its entities marked: "[PER Peter Blackburn] spoke".
std::string marked_tokens(const TokenizedSentence& sent, const std::vector<Entity>& ents) {
  std::string line;
  size_t e = 0;
  for (int64_t t = 0; t < static_cast<int64_t>(sent.size()); ++t) {
    if (!line.empty()) line += ' ';
    if (e < ents.size() && ents[e].span.begin == t) line += "[" + ents[e].span.type + " ";
    line += sent[static_cast<size_t>(t)].text;
    if (e < ents.size() && ents[e].span.end == t + 1) {
      line += "]";
      ++e;
    }
  }
  return line;
}

/// Raw text with its entities marked where they are, spacing kept.
std::string marked_text(const Document& doc, const std::vector<TaggedSentence>& tagged, size_t first) {
  std::string out;
  size_t at = 0;
  for (size_t s = 0; s < doc.sentences.size(); ++s) {
    const auto& sent = doc.sentences[s];
    for (const auto& e : tagged[first + s].entities) {
      const size_t begin = sent[static_cast<size_t>(e.span.begin)].begin;
      const size_t end = sent[static_cast<size_t>(e.span.end - 1)].end;
      out.append(doc.text, at, begin - at);
      out += "[" + e.span.type + " " + doc.text.substr(begin, end - begin) + "]";
      at = end;
    }
  }
  out.append(doc.text, at, std::string::npos);
  return out;
}

nlohmann::json document_json(const Document& doc, const std::vector<TaggedSentence>& tagged, size_t first,
                             const NerPredictOptions& o);

void write_document(const Document& doc, const std::vector<TaggedSentence>& tagged, size_t first,
                    const NerPredictOptions& o, std::ostream& out) {
  const bool per_line = o.input_format != "conll";  // one input line per document: keep the lines
  if (o.format == "conll") {
    for (size_t s = 0; s < doc.sentences.size(); ++s) {
      const auto& sent = doc.sentences[s];
      const auto& tags = tagged[first + s].tags;
      for (size_t t = 0; t < sent.size(); ++t) out << sent[t].text << '\t' << tags[t] << '\n';
      out << '\n';
    }
    if (per_line && doc.sentences.empty()) out << '\n';  // a blank input line stays one
    return;
  }
  if (o.format == "inline") {
    if (o.input_format == "raw") {
      out << marked_text(doc, tagged, first) << '\n';
    } else if (per_line) {
      std::string line;
      for (size_t s = 0; s < doc.sentences.size(); ++s)
        line += (s ? " " : "") + marked_tokens(doc.sentences[s], tagged[first + s].entities);
      out << line << '\n';
    } else {
      for (size_t s = 0; s < doc.sentences.size(); ++s)
        out << marked_tokens(doc.sentences[s], tagged[first + s].entities) << '\n';
    }
    return;
  }
  nlohmann::json j = document_json(doc, tagged, first, o);
  j["file"] = doc.source;
  j["line"] = doc.line;
  out << j.dump() << '\n';
}

/// A document's JSON record, without "file" and "line".
nlohmann::json document_json(const Document& doc, const std::vector<TaggedSentence>& tagged, size_t first,
                             const NerPredictOptions& o) {
  nlohmann::json j = nlohmann::json::object();
  if (!doc.text.empty() || o.input_format == "raw") j["text"] = doc.text;
  j["entities"] = nlohmann::json::array();
  j["sentences"] = nlohmann::json::array();
  for (size_t s = 0; s < doc.sentences.size(); ++s) {
    const auto& sent = doc.sentences[s];
    const auto& t = tagged[first + s];
    nlohmann::json tokens = nlohmann::json::array();
    for (const auto& w : sent) tokens.push_back(w.text);
    j["sentences"].push_back({{"tokens", tokens}, {"tags", t.tags}});
    for (const auto& e : t.entities) {
      const auto& a = sent[static_cast<size_t>(e.span.begin)];
      const auto& b = sent[static_cast<size_t>(e.span.end - 1)];
      nlohmann::json ent = {{"type", e.span.type},
                            {"sentence", s},
                            {"token_start", e.span.begin},
                            {"token_end", e.span.end},
                            {"confidence", std::round(e.confidence * 1e4) / 1e4}};
      if (o.input_format == "raw") {
        ent["text"] = doc.text.substr(a.begin, b.end - a.begin);
        ent["start"] = a.char_begin;
        ent["end"] = b.char_end;
      } else {
        std::string text;
        for (int64_t k = e.span.begin; k < e.span.end; ++k)
          text += (k > e.span.begin ? " " : "") + sent[static_cast<size_t>(k)].text;
        ent["text"] = text;
      }
      j["entities"].push_back(ent);
    }
  }
  return j;
}

Document make_document(const std::string& path, int64_t line_number, const std::string& line,
                       const NerPredictOptions& o) {
  Document d{path, line_number, line, {}};
  if (o.input_format == "raw") {
    d.sentences = split_words(line);
  } else {
    TokenizedSentence sent;
    for (auto& t : split_whitespace(line)) sent.push_back({t, 0, 0, 0, 0});
    if (!sent.empty()) d.sentences.push_back(std::move(sent));
  }
  return d;
}

/// A FILE:LINE warning for each word of `d` longer than kMaxWordChars.
void warn_long_words(const Document& d, const std::string& prefix, std::ostream& err) {
  for (const auto& s : d.sentences)
    for (const auto& w : s) {
      const int64_t n = utf8_length(w.text);
      if (n > kMaxWordChars)
        err << prefix << "warning: " << (d.source == "-" ? "<stdin>" : d.source) << ":" << d.line << ": a word of " << n
            << " characters; its character features read only its first and last " << kMaxWordChars / 2 << "\n";
    }
}

/// Tags the sentences of `docs` together (tags in options.tag_scheme).
std::vector<TaggedSentence> tag_documents(NerModel& model, const std::vector<Document>& docs,
                                          const NerPredictOptions& options) {
  std::vector<std::vector<std::string>> sentences;
  for (const auto& d : docs)
    for (const auto& s : d.sentences) {
      std::vector<std::string> tokens;
      for (const auto& w : s) tokens.push_back(w.text);
      sentences.push_back(std::move(tokens));
    }
  auto tagged = model.tag(sentences, options.format == "jsonl", options.batch_size);
  if (!options.tag_scheme.empty()) {
    const TagScheme scheme = parse_tag_scheme(options.tag_scheme);
    for (auto& t : tagged) t.tags = convert_tags(t.tags, model.scheme(), scheme);
  }
  return tagged;
}

/// Tags documents together and writes them in order.
void tag_and_write(NerModel& model, std::vector<Document>& docs, const NerPredictOptions& options,
                   std::ostream& out) {
  const auto tagged = tag_documents(model, docs, options);
  size_t first = 0;
  for (const auto& d : docs) {
    write_document(d, tagged, first, options, out);
    first += d.sentences.size();
  }
  out.flush();
  docs.clear();
}

}  // namespace

std::vector<nlohmann::json> ner_records(NerModel& model, const std::vector<std::string>& texts,
                                        const NerPredictOptions& options) {
  std::vector<Document> docs;
  for (const auto& text : texts) docs.push_back(make_document("", 0, text, options));
  const auto tagged = tag_documents(model, docs, options);
  std::vector<nlohmann::json> records;
  size_t first = 0;
  for (const auto& d : docs) {
    records.push_back(document_json(d, tagged, first, options));
    first += d.sentences.size();
  }
  return records;
}

int predict_ner(NerModel& model, const std::vector<std::string>& inputs, const NerPredictOptions& options,
                std::ostream& out, std::ostream& err) {
  const size_t chunk = static_cast<size_t>(options.batch_size) * 8;  // sentences (or lines) tagged together
  CountProgress bar(!options.progress, "lines");
  const std::string prefix = options.error_prefix.empty() ? "" : options.error_prefix + ": ";
  return for_each_input(inputs, options.error_prefix, err, [&](const std::string& path) {
    std::vector<Document> docs;
    if (options.input_format == "conll") {
      for (const auto& s : read_conll(path, options.conll)) {
        Document d{path, s.line, "", {}};
        TokenizedSentence sent;
        for (const auto& t : s.tokens) sent.push_back({t, 0, 0, 0, 0});
        d.sentences.push_back(std::move(sent));
        warn_long_words(d, prefix, err);
        docs.push_back(std::move(d));
        if (docs.size() >= chunk) tag_and_write(model, docs, options, out);
      }
      tag_and_write(model, docs, options, out);
      return;
    }
    // Line by line, so large files stream and a terminal gets each answer at once.
    stream_lines(path, chunk, [&](const std::vector<NumberedLine>& lines) {
      for (const auto& line : lines) {
        docs.push_back(make_document(path, line.number, line.text, options));
        warn_long_words(docs.back(), prefix, err);
      }
      tag_and_write(model, docs, options, out);
    }, &bar, &err, options.error_prefix);
  });
}

}  // namespace cellstate
