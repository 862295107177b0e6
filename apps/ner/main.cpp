// cellstate-ner: train a BiLSTM-CRF named-entity tagger on CoNLL data,
// evaluate it as conlleval does, and tag raw text, CoNLL columns or
// tokenised lines with it.
#include <boost/program_options.hpp>

#include <algorithm>
#include <iomanip>
#include <iostream>

#include <unistd.h>

#include "cellstate/nn/gemm.h"
#include "cellstate/util/timing.h"
#include "cellstate/cli/cli.h"
#include "cellstate/cli/options.h"
#include "cellstate/cli/training.h"
#include "cellstate/tasks/task.h"
#include "cellstate/util/io.h"
#include "cellstate/tasks/ner.h"
#include "cellstate/util/runtime.h"

namespace po = boost::program_options;
namespace cs = cellstate;

namespace {

const char* kProgram = "cellstate-ner";
const char* kShippedModel = "ner-conll2003";

void add_columns(po::options_description& d, cs::ConllOptions& c) {
  d.add_options()("token-column", cellstate::defaulted(&c.token_column),
                  "CoNLL column of the tokens (0-based; negative counts from the end)")(
      "tag-column", cellstate::defaulted(&c.tag_column),
      "CoNLL column of the tags (0-based; negative counts from the end)");
}

int train(int argc, char** argv) {
  cs::NerTrainConfig c;
  c.model.hidden = 200;
  c.model.embed = 100;
  c.model.bidirectional = true;
  c.model.dropout = 0.5;
  c.training.epochs = 50;
  c.training.batch_size = 16;
  c.training.patience = 8;
  std::string config;
  po::options_description d("Usage: cellstate-ner train --train FILE --dev FILE --model DIR [options]\n\nData");
  cs::add_help_and_config(d, config);
  d.add_options()("train", po::value(&c.train_path)->required(), "training data (CoNLL columns)")(
      "dev", po::value(&c.dev_path)->required(), "dev data for early stopping on entity F1")(
      "data-scheme", cellstate::defaulted(&c.data_scheme),
      "the files' tags: auto (detected), iob1, bio or iobes")(
      "tag-scheme", cellstate::defaulted(&c.tag_scheme), "what the model predicts: bio or iobes");
  add_columns(d, c.conll);
  po::options_description model("Model"), training("Training"), runtime("Runtime");
  // The sentence layer always reads both ways: no --bidirectional to give.
  cs::add_model_options(model, c.model, {true, true, false});
  model.add_options()("decoder", cellstate::defaulted(&c.decoder), "crf or softmax")(
      "char-embed", cellstate::defaulted(&c.char_embed),
      "character embedding size (0: no character model)")(
      "char-hidden", cellstate::defaulted(&c.char_hidden), "character BiLSTM units per direction")(
      "piece-vocab", cellstate::defaulted(&c.piece_vocab),
      "SentencePiece vocabulary of the pooled piece features (0: none)")(
      "piece-embed", cellstate::defaulted(&c.piece_embed), "piece embedding size")(
      "casing-embed", cellstate::defaulted(&c.casing_embed),
      "casing feature embedding size (0: none)")(
      "min-word-count", cellstate::defaulted(&c.min_word_count),
      "training words seen fewer times are unknown")(
      "rare-word-dropout", cellstate::defaulted(&c.rare_word_dropout),
      "training: a word seen once is read as unknown with this probability")(
      "word-dropout", cellstate::defaulted(&c.word_dropout),
      "training: any word is read as unknown with this probability");
  cs::add_flag(model, "half", &c.half, "store weights as float16 (half the size)");
  cs::add_training_options(training, c.training);
  cs::add_runtime_options(runtime, c.runtime);
  d.add(model).add(training).add(runtime);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " train", [&] {
        c.model.validate();
        c.training.validate();
        c.runtime.validate();
        if (c.data_scheme != "auto") cs::parse_tag_scheme(c.data_scheme);
        if (c.tag_scheme != "bio" && c.tag_scheme != "iobes")
          throw std::invalid_argument("--tag-scheme must be bio or iobes");
        if (c.decoder != "crf" && c.decoder != "softmax")
          throw std::invalid_argument("--decoder must be crf or softmax");
        if (c.char_embed < 0 || c.char_hidden < 1 || c.piece_vocab < 0 || c.piece_embed < 1 || c.casing_embed < 0)
          throw std::invalid_argument("feature sizes must be >= 0 (hidden sizes >= 1)");
        if (c.piece_vocab > 0 && c.piece_vocab < 8) throw std::invalid_argument("--piece-vocab must be 0 or >= 8");
        if (c.min_word_count < 1) throw std::invalid_argument("--min-word-count must be >= 1");
        if (c.rare_word_dropout < 0 || c.rare_word_dropout >= 1 || c.word_dropout < 0 || c.word_dropout >= 1)
          throw std::invalid_argument("word dropout probabilities must be in [0, 1)");
      }, {nullptr, {}, "init-from", cs::ner_inherited_options}))
    return *s;
  return cs::run_training(std::string(kProgram) + " train", c.training, c.runtime,
                          [&](const cs::ProcessGroup& group) { return cs::train_ner(c, group); });
}

int eval(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  auto& m = u.model;
  cs::ConllOptions conll;
  std::string data, scheme = "auto", output;
  bool json = false;
  po::options_description d("Usage: cellstate-ner eval --data FILE [--model DIR] [options]\n\n"
                            "Entity precision, recall and F1 per type and overall, and token accuracy,\n"
                            "counted as conlleval counts them.\n\nOptions");
  d.add_options()("data", po::value(&data)->required(), "tagged data (CoNLL columns)")(
      "data-scheme", cellstate::defaulted(&scheme), "the file's tags: auto, iob1, bio or iobes")(
      "output", po::value(&output), "write 'token gold predicted' lines (conlleval's input) to this file");
  cs::add_flag(d, "json", &json, "print the metrics as JSON");
  add_columns(d, conll);
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " eval", [&] {
        u.validate();
        if (scheme != "auto") cs::parse_tag_scheme(scheme);
      }))
    return *s;
  u.runtime.apply();
  auto model = cs::NerModel::load(m.dir, m.implementation(), m.verify);
  const auto report = cs::evaluate_ner(model, data, conll, scheme, output, !u.runtime.quiet);
  if (json) std::cout << report.to_json().dump(2) << "\n";
  else std::cout << report.table();
  return 0;
}

int predict(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  auto& m = u.model;
  cs::NerPredictOptions p;
  std::vector<std::string> inputs;
  po::options_description d("Usage: cellstate-ner predict [--model DIR] [FILES... | -] [options]\n\nOptions");
  d.add_options()("input-format", cellstate::defaulted(&p.input_format),
      "raw (text, split into sentences and tokens), conll (token column) or tokens (one tokenised sentence per line)")(
      "format", cellstate::defaulted(&p.format),
      "jsonl (per line: entities with offsets and confidences), conll (token<TAB>tag) or inline ([TYPE words])")(
      "tag-scheme", po::value(&p.tag_scheme), "tags shown (conll, jsonl) in bio or iobes (default: the model's)")(
      "batch-size", cellstate::defaulted(&p.batch_size), "sentences per forward pass")(
      "token-column", cellstate::defaulted(&p.conll.token_column),
      "--input-format conll: column of the tokens");
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " predict", [&] {
        u.validate();
        if (p.input_format != "raw" && p.input_format != "conll" && p.input_format != "tokens")
          throw std::invalid_argument("--input-format must be raw, conll or tokens");
        if (p.format == "json") {
          std::cerr << kProgram << " predict: warning: --format json is deprecated: write --format jsonl\n";
          p.format = "jsonl";
        }
        if (p.format != "jsonl" && p.format != "conll" && p.format != "inline")
          throw std::invalid_argument("--format must be jsonl, conll or inline");
        if (p.batch_size < 1) throw std::invalid_argument("--batch-size must be >= 1");
        if (!p.tag_scheme.empty() && p.tag_scheme != "bio" && p.tag_scheme != "iobes")
          throw std::invalid_argument("--tag-scheme must be bio or iobes");
      }, {&inputs, {{"inputs", "files"}, {"input", "input-format"}, {"output", "format"}}}))
    return *s;
  u.runtime.apply();
  if (inputs.empty()) inputs.push_back("-");
  auto model = cs::NerModel::load(m.dir, m.implementation(), m.verify);
  p.error_prefix = kProgram;
  p.progress = !u.runtime.quiet && !isatty(STDOUT_FILENO);  // a bar only beside output going elsewhere
  return cs::predict_ner(model, inputs, p, std::cout, std::cerr);
}

int bench(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  auto& m = u.model;
  cs::ConllOptions conll;
  std::string data, dump;
  int64_t batch_size = 32;
  int repeat = 3;
  bool json = false;
  po::options_description d("Usage: cellstate-ner bench --data FILE [--model DIR] [options]\n\n"
                            "Times tagging every sentence of a CoNLL file: tokens/s batched (with the\n"
                            "entity confidences predict computes) and the latency of one sentence.\n\nOptions");
  d.add_options()("data", po::value(&data)->required(), "sentences to tag (CoNLL columns; tags ignored)")(
      "batch-size", cellstate::defaulted(&batch_size), "sentences per forward pass")(
      "repeat", cellstate::defaulted(&repeat), "timed passes (the median is reported)")(
      "dump-ids", po::value(&dump), "also write the tagger's inputs as JSON (for bench/ner_python.py)");
  cs::add_flag(d, "json", &json, "print the result as JSON");
  add_columns(d, conll);
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " bench", [&] {
        u.validate();
        if (batch_size < 1 || repeat < 1) throw std::invalid_argument("--batch-size and --repeat must be >= 1");
      }))
    return *s;
  const int threads = u.runtime.apply();
  auto model = cs::NerModel::load(m.dir, m.implementation(), m.verify);
  conll.has_tags = false;
  std::vector<std::vector<std::string>> sentences;
  int64_t tokens = 0;
  for (auto& s : cs::read_conll(data, conll)) {
    tokens += static_cast<int64_t>(s.tokens.size());
    sentences.push_back(std::move(s.tokens));
  }
  if (sentences.empty()) throw cs::InputError(data, 0, "no sentences (empty input)");
  if (!dump.empty()) {
    nlohmann::json j = {{"config", model.config()}, {"batch_size", batch_size}};
    auto& inputs = j["sentences"] = nlohmann::json::array();
    for (const auto& s : sentences) {
      const auto in = model.encode(s);
      inputs.push_back({{"words", in.words}, {"casing", in.casing}, {"chars", in.chars}, {"pieces", in.pieces}});
    }
    cs::atomic_write(dump, j.dump());
  }
  std::vector<double> rates, latencies;
  for (int r = 0; r < repeat; ++r) {
    const cs::Stopwatch watch;
    model.tag(sentences, true, batch_size);
    rates.push_back(static_cast<double>(tokens) / watch.seconds());
  }
  const size_t singles = std::min<size_t>(sentences.size(), 200);
  for (size_t i = 0; i < singles; ++i) {
    const cs::Stopwatch watch;
    model.tag({sentences[i]}, true, 1);
    latencies.push_back(watch.ms());
  }
  const double rate = cs::median(rates), latency = cs::median(latencies);
  if (json) {
    std::cout << nlohmann::json{{"impl", m.impl},         {"threads", threads}, {"precision", cs::to_string(cs::matmul_precision())},          {"sentences", sentences.size()},
                                {"tokens", tokens},       {"tokens_per_s", rate},        {"batch_size", batch_size},
                                {"latency_ms_median", latency}}
                     .dump()
              << "\n";
  } else {
    std::cout << std::fixed << std::setprecision(0) << kProgram << " (" << m.impl << ", " << threads << " threads): "
              << sentences.size() << " sentences, " << tokens << " tokens, batch " << batch_size << ": " << rate
              << " tokens/s; one sentence: " << std::setprecision(2) << latency << " ms median (first "
              << singles << " sentences)\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cs::run_subcommands(argc, argv, kProgram, "BiLSTM-CRF named-entity tagger",
                             {{"train", "train a tagger on CoNLL data", train},
                              {"eval", "entity P/R/F1 per type (as conlleval) and token accuracy", eval},
                              {"predict", "tag raw text, CoNLL columns or tokenised lines", predict},
                              {"bench", "time tagging: tokens/s and single-sentence latency", bench},
                              cs::models_subcommand(kProgram, "ner"),
                              cs::seal_subcommand(kProgram, "ner", [](const std::string& dir) { cs::NerModel::load(dir, std::nullopt, false); }),
                              cs::quantize_subcommand(kProgram, kShippedModel, [](const std::string& dir, const auto& use) {
                                auto m = cs::NerModel::load(dir);
                                use({{"weights.pt", m.tagger().get()}});
                              })});
}
