// cellstate-translate: train an attention encoder-decoder on parallel text,
// score it with BLEU and chrF, and translate sentences with it.
#include <boost/program_options.hpp>

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
#include "cellstate/util/runtime.h"
#include "cellstate/data/readers.h"
#include "cellstate/tasks/translate.h"
#include "cellstate/data/tokenizer.h"

namespace po = boost::program_options;
namespace cs = cellstate;

namespace {

const char* kProgram = "cellstate-translate";
const char* kShippedModel = "translate-multi30k-en-de";

void add_decoding(po::options_description& d, cs::DecodingOptions& o) {
  d.add_options()("beam", cellstate::defaulted(&o.beam), "beam size (1: greedy)")(
      "length-penalty", cellstate::defaulted(&o.length_penalty),
      "GNMT length normalisation alpha (0: raw log-probability)")(
      "max-length-ratio", cellstate::defaulted(&o.max_length_ratio),
      "at most ratio x source tokens + 10 output tokens")(
      "min-length", cellstate::defaulted(&o.min_length), "no eos before this many tokens")(
      "nbest", cellstate::defaulted(&o.nbest), "hypotheses per sentence (<= --beam)");
  po::options_description sampling("Sampling (with --sample)");
  cs::add_flag(sampling, "sample", &o.sample, "draw each token at random instead of searching (one hypothesis)");
  cs::add_sampling_options(sampling, o.sampling);
  sampling.add_options()("seed", cellstate::defaulted(&o.seed), "sampling seed");
  d.add(sampling);
}

// --sample-topk K (0.1) meant --sample --top-k K.
const std::vector<cs::Renamed> kDecodingRenamed = {{"sample-topk", "top-k", {"--sample"}}};
const std::vector<cs::Renamed> kTranslateRenamed = [] {
  auto renamed = kDecodingRenamed;
  renamed.push_back({"inputs", "files"});
  return renamed;
}();

int train(int argc, char** argv) {
  cs::TranslateTrainConfig c;
  c.model.hidden = 256;
  c.model.embed = 256;
  c.model.dropout = 0.3;
  c.model.bidirectional = true;
  c.training.epochs = 30;
  c.training.batch_size = 64;
  c.training.patience = 5;
  c.training.clip = 1.0;
  c.training.lr_schedule = cs::LrScheduleKind::kPlateau;
  std::string config;
  bool separate = false;
  po::options_description d("Usage: cellstate-translate train --src-train F --tgt-train F --src-dev F --tgt-dev F "
                            "--model DIR [options]\n\nData");
  cs::add_help_and_config(d, config);
  d.add_options()("src-train", po::value(&c.src_train)->required(), "training source sentences (plain or .gz)")(
      "tgt-train", po::value(&c.tgt_train)->required(), "training target sentences, line-aligned")(
      "src-dev", po::value(&c.src_dev)->required(), "dev source sentences")(
      "tgt-dev", po::value(&c.tgt_dev)->required(), "dev references, line-aligned")(
      "max-words", cellstate::defaulted(&c.max_words),
      "training pairs with a longer side are dropped (and counted)");
  po::options_description model("Model"), tok("Tokenizer"), training("Training"), runtime("Runtime");
  // LSTMs throughout and an encoder that reads both ways: no --rnn or --bidirectional to give.
  cs::add_model_options(model, c.model, {true, false, false});
  model.add_options()("attention", cellstate::defaulted(&c.attention), "general (Luong) or additive (Bahdanau)");
  cs::add_flag(model, "input-feeding", &c.input_feeding, "feed the previous attentional state into the decoder");
  cs::add_flag(model, "tie", &c.tie, "output layer shares the target embeddings (--no-tie: a matrix of its own)");
  cs::add_flag(model, "half", &c.half, "store weights as float16");
  tok.add_options()("vocab-size", cellstate::defaulted(&c.vocab_size), "SentencePiece vocabulary");
  cs::add_flag(tok, "separate-vocab", &separate, "one tokenizer per language instead of a joint one");
  cs::add_training_options(training, c.training);
  training.add_options()("label-smoothing", cellstate::defaulted(&c.label_smoothing),
                         "label smoothing of the cross-entropy")(
      "batch-tokens", cellstate::defaulted(&c.max_tokens),
      "> 0: batches of about this many padded tokens instead of --batch-size sentences")(
      "dev-beam", cellstate::defaulted(&c.dev_beam), "beam of the dev BLEU that early stopping follows");
  cs::add_runtime_options(runtime, c.runtime);
  d.add(model).add(tok).add(training).add(runtime);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " train", [&] {
        c.model.validate();
        c.training.validate();
        c.runtime.validate();
        cs::parse_attention(c.attention);
        if (c.vocab_size < 8) throw std::invalid_argument("--vocab-size must be >= 8");
        if (c.max_words < 1) throw std::invalid_argument("--max-words must be >= 1");
        if (c.label_smoothing < 0 || c.label_smoothing >= 1)
          throw std::invalid_argument("--label-smoothing must be in [0, 1)");
        if (c.dev_beam < 1 || c.max_tokens < 0) throw std::invalid_argument("--dev-beam must be >= 1, --batch-tokens >= 0");
      }, {nullptr, {{"max-tokens", "batch-tokens"}}, "init-from", cs::translate_inherited_options}))
    return *s;
  c.joint_vocab = !separate;
  return cs::run_training(std::string(kProgram) + " train", c.training, c.runtime,
                          [&](const cs::ProcessGroup& group) { return cs::train_translation(c, group); });
}

int eval(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  cs::DecodingOptions o;
  std::string src, ref;
  bool lowercase = false, json = false;
  int64_t batch_size = 32;
  po::options_description d("Usage: cellstate-translate eval --src FILE --ref FILE [--model DIR] [options]\n\n"
                            "Corpus BLEU as sacreBLEU computes it by default (13a tokenisation, cased,\n"
                            "on detokenised output) and chrF.\n\nOptions");
  d.add_options()("src", po::value(&src)->required(), "source sentences (plain or .gz)")(
      "ref", po::value(&ref)->required(), "references, line-aligned")(
      "batch-size", cellstate::defaulted(&batch_size), "sentences per batch");
  cs::add_flag(d, "lowercase", &lowercase, "case-insensitive BLEU");
  cs::add_flag(d, "json", &json, "print the scores as JSON");
  add_decoding(d, o);
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " eval", [&] {
        u.validate();
        o.validate();
      }, {nullptr, kDecodingRenamed}))
    return *s;
  u.runtime.apply();
  auto model = cs::TranslationModel::load(u.model.dir, u.model.implementation(), u.model.verify);
  const auto r = cs::evaluate_translation(model, src, ref, o, lowercase, batch_size, !u.runtime.quiet);
  if (json) {
    std::cout << nlohmann::json{{"bleu", r.bleu.to_json()}, {"chrf", r.chrf}, {"sentences", r.sentences},
                                {"beam", o.beam}, {"lowercase", lowercase}}
                     .dump(2)
              << "\n";
  } else {
    std::cout << r.bleu.to_string() << "\nchrF2 = " << std::fixed << std::setprecision(2) << r.chrf << "\n"
              << r.sentences << " sentences, beam " << o.beam << (lowercase ? ", lowercased" : "") << "\n";
  }
  return 0;
}

int translate(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  cs::TranslateFilesOptions t;
  auto& o = t.decoding;
  std::vector<std::string> inputs;
  po::options_description d("Usage: cellstate-translate translate [--model DIR] [FILES... | -] [options]\n\nOptions");
  d.add_options()("format", cellstate::defaulted(&t.format),
      "text (one translation per line; with --nbest K, K lines 'SCORE<TAB>TEXT' per line) or jsonl "
      "(per line: each sentence's n-best with scores and tokens)")(
      "attention-svg", po::value(&t.svg_dir), "write DIR/N.svg, an attention heatmap of sentence N (1-based)")(
      "batch-size", cellstate::defaulted(&t.batch_size), "sentences per batch");
  cs::add_flag(d, "attention-weights", &t.attention_weights,
               "jsonl: also each hypothesis's attention weights over the source pieces");
  add_decoding(d, o);
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " translate", [&] {
        u.validate();
        o.validate();
        if (t.format != "text" && t.format != "jsonl") throw std::invalid_argument("--format must be text or jsonl");
        if (t.batch_size < 1) throw std::invalid_argument("--batch-size must be >= 1");
      }, {&inputs, kTranslateRenamed}))
    return *s;
  u.runtime.apply();
  if (inputs.empty()) inputs.push_back("-");
  auto model = cs::TranslationModel::load(u.model.dir, u.model.implementation(), u.model.verify);
  t.error_prefix = kProgram;
  t.progress = !u.runtime.quiet && !isatty(STDOUT_FILENO);  // a bar only beside output going elsewhere
  return cs::translate_files(model, inputs, t, std::cout, std::cerr);
}

/// bench --dump-ids: the config, the batch size and each sentence's ids
/// (source; with a target file, target), and the best beam-5 hypothesis the
/// timed run found, so that a peer (bench/translate_python.py) runs on the
/// same inputs and can check it searched the same way.
void write_bench_inputs(const cs::TranslationModel& model, const std::vector<std::string>& sources,
                        const std::vector<std::string>& targets, const std::vector<cs::Translation>& beam5,
                        int64_t batch_size, const std::string& path) {
  nlohmann::json j = {{"config", model.config()}, {"batch_size", batch_size}, {"bos", cs::Tokenizer::kBosId},
                      {"eos", cs::Tokenizer::kEosId}};
  auto& out = j["sentences"] = nlohmann::json::array();
  for (size_t i = 0; i < sources.size(); ++i) {
    nlohmann::json s = {{"source", model.encode_source(sources[i])}, {"beam5", beam5[i].hypotheses.front().tokens}};
    if (!targets.empty()) s["target"] = model.encode_target(targets[i]);
    out.push_back(std::move(s));
  }
  cs::atomic_write(path, j.dump());
}

int bench(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  std::string src, tgt, dump;
  int64_t batch_size = 32, singles = 100;
  bool json = false;
  po::options_description d("Usage: cellstate-translate bench --src FILE [--model DIR] [options]\n\n"
                            "Times translating every line of FILE in batches at beam 1 and beam 5\n"
                            "(sentences/s), and one sentence at a time (median latency).\n\nOptions");
  d.add_options()("src", po::value(&src)->required(), "source sentences (plain or .gz)")(
      "batch-size", cellstate::defaulted(&batch_size), "sentences per batch")(
      "singles", cellstate::defaulted(&singles), "sentences timed one at a time")(
      "dump-ids", po::value(&dump),
      "also write the model's inputs as JSON (for bench/translate_python.py): the config and each "
      "sentence's source ids, and with --tgt its target ids")(
      "tgt", po::value(&tgt), "--dump-ids: the target sentences, line by line with --src (plain or .gz)");
  cs::add_flag(d, "json", &json, "print the result as JSON");
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " bench", [&] {
        u.validate();
        if (batch_size < 1 || singles < 1) throw std::invalid_argument("--batch-size and --singles must be >= 1");
        if (!tgt.empty() && dump.empty()) throw std::invalid_argument("--tgt is read only with --dump-ids");
      }))
    return *s;
  const int threads = u.runtime.apply();
  auto model = cs::TranslationModel::load(u.model.dir, u.model.implementation(), u.model.verify);
  std::vector<std::string> lines;
  for (auto& [n, line] : cs::read_lines(src)) lines.push_back(line);
  if (lines.empty()) throw cs::InputError(src, 0, "no sentences (empty input)");
  std::vector<std::string> targets;  // --dump-ids --tgt: checked before the timing
  if (!tgt.empty()) {
    for (auto& [n, line] : cs::read_lines(tgt)) targets.push_back(line);
    if (targets.size() != lines.size())
      throw cs::InputError(tgt, static_cast<int64_t>(std::min(targets.size(), lines.size())) + 1,
                           "expected as many lines as " + src + " (" + std::to_string(lines.size()) + "), got " +
                               std::to_string(targets.size()));
  }
  nlohmann::json result = {{"impl", u.model.impl}, {"threads", threads}, {"precision", cs::to_string(cs::matmul_precision())}, {"sentences", lines.size()},
                           {"batch_size", batch_size}};
  std::vector<cs::Translation> beam5;
  for (int64_t beam : {1, 5}) {
    cs::DecodingOptions o;
    o.beam = beam;
    const cs::Stopwatch watch;
    auto translations = model.translate(lines, o, batch_size);
    result["sentences_per_s_beam" + std::to_string(beam)] = static_cast<double>(lines.size()) / watch.seconds();
    std::vector<double> latency;
    for (int64_t i = 0; i < std::min<int64_t>(singles, static_cast<int64_t>(lines.size())); ++i) {
      const cs::Stopwatch one;
      model.translate({lines[static_cast<size_t>(i)]}, o, 1);
      latency.push_back(one.ms());
    }
    result["latency_ms_beam" + std::to_string(beam)] = cs::median(latency);
    if (beam == 5) beam5 = std::move(translations);
  }
  if (!dump.empty()) write_bench_inputs(model, lines, targets, beam5, batch_size, dump);
  if (json) {
    std::cout << result.dump() << "\n";
  } else {
    std::cout << std::fixed << std::setprecision(1) << kProgram << " (" << u.model.impl << ", " << threads
              << " threads), " << lines.size() << " sentences, batch " << batch_size << ": beam 1 "
              << result["sentences_per_s_beam1"].get<double>() << " sentences/s, " << std::setprecision(2)
              << result["latency_ms_beam1"].get<double>() << " ms one sentence; beam 5 " << std::setprecision(1)
              << result["sentences_per_s_beam5"].get<double>() << " sentences/s, " << std::setprecision(2)
              << result["latency_ms_beam5"].get<double>() << " ms one sentence\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cs::run_subcommands(argc, argv, kProgram, "attention encoder-decoder translator",
                             {{"train", "train a translator on parallel text", train},
                              {"eval", "BLEU (sacreBLEU's default) and chrF on a test set", eval},
                              {"translate", "translate each line of text files", translate},
                              {"bench", "time translation: sentences/s at beam 1 and 5, latency", bench},
                              cs::models_subcommand(kProgram, "translate"),
                              cs::seal_subcommand(kProgram, "translate", [](const std::string& dir) { cs::TranslationModel::load(dir, std::nullopt, false); }),
                              cs::quantize_subcommand(kProgram, kShippedModel, [](const std::string& dir, const auto& use) {
                                auto m = cs::TranslationModel::load(dir);
                                use({{"weights.pt", m.model().get()}});
                              })});
}
