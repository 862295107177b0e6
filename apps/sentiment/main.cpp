// cellstate-sentiment: train a recurrent sentiment classifier, evaluate it,
// and label the lines (or files) of text files with it.
#include <boost/program_options.hpp>

#include <fstream>
#include <iomanip>
#include <iostream>

#include <unistd.h>

#include "cellstate/nn/gemm.h"
#include "cellstate/cli/cli.h"
#include "cellstate/cli/options.h"
#include "cellstate/cli/training.h"
#include "cellstate/tasks/task.h"
#include "cellstate/util/io.h"
#include "cellstate/data/readers.h"
#include "cellstate/util/runtime.h"
#include "cellstate/tasks/sentiment.h"

namespace po = boost::program_options;
namespace cs = cellstate;

namespace {

const char* kProgram = "cellstate-sentiment";
const char* kShippedModel = "sentiment-sst2";

po::options_description group(const std::string& usage) { return po::options_description(usage); }

int train(int argc, char** argv) {
  cs::SentimentTrainConfig c;
  c.model.hidden = 256;
  c.model.embed = 256;
  c.model.bidirectional = true;
  c.model.dropout = 0.5;
  c.training.epochs = 20;
  c.training.patience = 5;
  std::string config;
  auto d = group("Usage: cellstate-sentiment train --train FILE --dev FILE --model DIR [options]\n\nData");
  cs::add_help_and_config(d, config);
  d.add_options()("train", po::value(&c.train_path)->required(), "training data (TSV, SST style, or DIR/LABEL/FILE)")(
      "dev", po::value(&c.dev_path)->required(), "dev data for early stopping (same formats)")(
      "input-format", cellstate::defaulted(&c.format), "auto, tsv, sst or dir")(
      "label-names", po::value(&c.label_names), "rename the data's labels, e.g. 0=negative,1=positive")(
      "max-length", cellstate::defaulted(&c.max_length),
      "tokens kept per text (longer texts are truncated and counted)");
  po::options_description model("Model"), tok("Tokenizer"), training("Training"), runtime("Runtime");
  cs::add_model_options(model, c.model);
  model.add_options()("pooling", cellstate::defaulted(&c.pooling), "last, max, mean or attention")(
      "embed-dropout", cellstate::defaulted(&c.embed_dropout), "dropout on embeddings")(
      "word-dropout", cellstate::defaulted(&c.word_dropout),
      "probability of replacing a training token by unk")(
      "lm-weight", cellstate::defaulted(&c.lm_weight),
      "weight of an auxiliary language-model loss while training (0: off)")(
      "teacher", po::value(&c.teacher), "distil from this model: it labels --augment-spans spans per text")(
      "augment-spans", cellstate::defaulted(&c.augment_spans),
      "random word spans per training text, with the teacher's probabilities as targets")(
      "ensemble", cellstate::defaulted(&c.ensemble),
      "train N members (seeds seed..seed+N-1) whose probabilities are averaged");
  cs::add_flag(model, "half", &c.half, "store weights as float16 (half the size)");
  tok.add_options()("vocab-size", cellstate::defaulted(&c.vocab_size), "SentencePiece vocabulary")(
      "spm-type", cellstate::defaulted(&c.spm_type), "unigram, bpe, char or word")(
      "spm-normalization", cellstate::defaulted(&c.spm_normalization),
      "SentencePiece normalisation: nmt_nfkc_cf (folds case), nmt_nfkc, nfkc, nfkc_cf or identity")(
      "sample-alpha", cellstate::defaulted(&c.sample_alpha),
      "subword regularisation while training (0: off; 0.1-0.5 typical; unigram only)")(
      "sample-nbest", cellstate::defaulted(&c.sample_nbest), "segmentations to sample from");
  cs::add_training_options(training, c.training);
  cs::add_runtime_options(runtime, c.runtime);
  d.add(model).add(tok).add(training).add(runtime);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " train", [&] {
        c.model.validate();
        c.training.validate();
        c.runtime.validate();
        cs::parse_pooling(c.pooling);
        cs::parse_classification_format(c.format);
        if (c.vocab_size < 8) throw std::invalid_argument("--vocab-size must be >= 8");
        if (c.max_length < 1) throw std::invalid_argument("--max-length must be >= 1");
        cs::parse_label_names(c.label_names);
        if (c.ensemble < 1) throw std::invalid_argument("--ensemble must be >= 1");
        if (!c.teacher.empty() && c.augment_spans < 1)
          throw std::invalid_argument("--teacher labels --augment-spans spans per text: give --augment-spans N >= 1");
        if (c.teacher.empty() && c.augment_spans > 0)
          throw std::invalid_argument("--augment-spans needs a --teacher model to label the spans");
        if (!c.teacher.empty() && !cs::is_directory(c.teacher))
          throw std::invalid_argument("--teacher " + c.teacher + ": no such model directory");
      }, {nullptr, {{"format", "input-format"}}, "init-from", cs::sentiment_inherited_options}))
    return *s;
  return cs::run_training(std::string(kProgram) + " train", c.training, c.runtime,
                          [&](const cs::ProcessGroup& group) { return cs::train_sentiment(c, group); });
}

int eval(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  auto& m = u.model;
  std::string data, format = "auto";
  bool json = false;
  auto d = group("Usage: cellstate-sentiment eval --data FILE [--model DIR] [options]\n\nOptions");
  d.add_options()("data", po::value(&data)->required(), "labelled data (TSV, SST style, or DIR/LABEL/FILE)")(
      "input-format", cellstate::defaulted(&format), "auto, tsv, sst or dir");
  cs::add_flag(d, "json", &json, "print the metrics as JSON");
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " eval", [&] {
        u.validate();
      }, {nullptr, {{"format", "input-format"}}}))
    return *s;
  u.runtime.apply();
  auto model = cs::SentimentModel::load(m.dir, m.implementation(), m.verify);
  const auto report = cs::evaluate_sentiment(model, data, format, !u.runtime.quiet);
  if (json) std::cout << report.to_json().dump(2) << "\n";
  else std::cout << report.table();
  return 0;
}

int predict(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  auto& m = u.model;
  cs::PredictOptions p;
  std::vector<std::string> inputs;
  auto d = group("Usage: cellstate-sentiment predict [--model DIR] [FILES... | -] [options]\n\nOptions");
  d.add_options()("unit", cellstate::defaulted(&p.unit),
      "line: one result per line (empty lines marked); file: one per file plus a per-sentence breakdown")(
      "format", cellstate::defaulted(&p.format),
      "tsv (file, line, label, probability) or jsonl (all class probabilities)")(
      "top-k", cellstate::defaulted(&p.top_k), "labels shown per result, most probable first")(
      "threshold", cellstate::defaulted(&p.threshold),
      "below this best probability the label is '?'")(
      "batch-size", cellstate::defaulted(&p.batch_size), "texts per forward pass");
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " predict", [&] {
        u.validate();
        if (p.unit != "line" && p.unit != "file") throw std::invalid_argument("--unit must be line or file");
        if (p.format != "tsv" && p.format != "jsonl") throw std::invalid_argument("--format must be tsv or jsonl");
        if (p.top_k < 1) throw std::invalid_argument("--top-k must be >= 1");
        if (p.threshold < 0 || p.threshold > 1) throw std::invalid_argument("--threshold must be in [0, 1]");
        if (p.batch_size < 1) throw std::invalid_argument("--batch-size must be >= 1");
      }, {&inputs, {{"input", "files"}}}))
    return *s;
  u.runtime.apply();
  if (inputs.empty()) inputs.push_back("-");
  auto model = cs::SentimentModel::load(m.dir, m.implementation(), m.verify);
  p.error_prefix = std::string(kProgram) + " predict";
  p.progress = !u.runtime.quiet && !isatty(STDOUT_FILENO);  // a bar only beside output going elsewhere
  return cs::predict_sentiment(model, inputs, p, std::cout, std::cerr);
}

int bench(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  auto& m = u.model;
  std::string data, format = "auto", dump;
  int64_t batch_size = 64;
  int repeat = 5;
  bool json = false;
  auto d = group("Usage: cellstate-sentiment bench --data FILE [--model DIR] [options]\n\n"
                 "Times predict on every text of FILE: sentences/s batched (tokenisation included)\n"
                 "and the latency of one sentence at a time.\n\nOptions");
  d.add_options()("data", po::value(&data)->required(), "texts to predict (labelled formats; labels ignored)")(
      "input-format", cellstate::defaulted(&format), "auto, tsv, sst or dir")(
      "batch-size", cellstate::defaulted(&batch_size), "texts per forward pass")(
      "repeat", cellstate::defaulted(&repeat), "timed passes (the median is reported)")(
      "dump-ids", po::value(&dump), "also write the token ids as JSON (for bench/sentiment_python.py)");
  cs::add_flag(d, "json", &json, "print the result as JSON");
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " bench", [&] {
        u.validate();
        if (batch_size < 1 || repeat < 1) throw std::invalid_argument("--batch-size and --repeat must be >= 1");
      }, {nullptr, {{"format", "input-format"}}}))
    return *s;
  const int threads = u.runtime.apply();
  auto model = cs::SentimentModel::load(m.dir, m.implementation(), m.verify);
  std::vector<std::string> texts;
  for (const auto& ex : cs::read_classification(data, cs::parse_classification_format(format))) texts.push_back(ex.text);
  if (!dump.empty()) {
    nlohmann::json j = {{"config", model.config()}, {"batch_size", batch_size}};
    j["ids"] = nlohmann::json::array();
    for (const auto& t : texts) j["ids"].push_back(model.encode(t));
    cs::atomic_write(dump, j.dump());
  }
  const auto r = cs::benchmark_sentiment(model, texts, batch_size, repeat);
  if (json) {
    std::cout << nlohmann::json{{"impl", m.impl},
                                {"threads", threads}, {"precision", cs::to_string(cs::matmul_precision())},
                                {"sentences", r.sentences},
                                {"batch_size", batch_size},
                                {"sentences_per_s", r.sentences_per_s},
                                {"latency_ms_median", r.latency_ms_median},
                                {"latency_ms_p90", r.latency_ms_p90}}
                     .dump()
              << "\n";
  } else {
    std::cout << std::fixed << std::setprecision(1) << "cellstate-sentiment (" << m.impl << ", " << threads
              << " threads): " << r.sentences << " sentences, batch " << batch_size << ": " << r.sentences_per_s
              << " sentences/s; one sentence: " << std::setprecision(2) << r.latency_ms_median
              << " ms median, " << r.latency_ms_p90 << " ms p90\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cs::run_subcommands(argc, argv, kProgram, "recurrent sentiment classifier",
                             {{"train", "train a model on labelled text", train},
                              {"eval", "accuracy, macro-F1, per-class scores and confusion on labelled text", eval},
                              {"predict", "label each line (or file) of text files", predict},
                              {"bench", "time predict: sentences/s and single-sentence latency", bench},
                              cs::models_subcommand(kProgram, "sentiment"),
                              cs::seal_subcommand(kProgram, "sentiment", [](const std::string& dir) { cs::SentimentModel::load(dir, std::nullopt, false); }),
                              cs::quantize_subcommand(kProgram, kShippedModel, [](const std::string& dir, const auto& use) {
                                auto m = cs::SentimentModel::load(dir);
                                cs::WeightModules weights;
                                for (size_t k = 0; k < m.members().size(); ++k)
                                  weights.emplace_back(cs::sentiment_weights_name(static_cast<int64_t>(k)), m.members()[k].get());
                                use(weights);
                              })});
}
