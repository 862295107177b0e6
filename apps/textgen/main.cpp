// cellstate-textgen: train a recurrent language model, evaluate it in nats
// and bits per character, and generate text from prompts with it.
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
#include "cellstate/util/runtime.h"
#include "cellstate/tasks/predict.h"
#include "cellstate/tasks/textgen.h"

namespace po = boost::program_options;
namespace cs = cellstate;

namespace {

const char* kProgram = "cellstate-textgen";
const char* kShippedModel = "textgen-shakespeare";
const char* kNoPrompt = "\x01";  // --prompt not given (an empty prompt is a prompt)

// "\n", "\t", "\\" in a --stop string, so line breaks can be given on a command line.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    if (c == 'n') out += '\n';
    else if (c == 't') out += '\t';
    else if (c == '\\') out += '\\';
    else out += std::string("\\") + c;
  }
  return out;
}

int train(int argc, char** argv) {
  cs::TextgenTrainConfig c;
  c.model.layers = 2;
  c.model.hidden = 512;
  c.model.embed = 512;
  c.model.dropout = 0.3;
  c.training.epochs = 30;
  c.training.batch_size = 32;
  c.training.lr = 2e-3;
  c.training.clip = 1.0;
  c.training.lr_schedule = cs::LrScheduleKind::kPlateau;
  c.training.patience = 4;
  std::string config;
  po::options_description d("Usage: cellstate-textgen train --train FILE [--valid FILE | --valid-fraction F] "
                            "--model DIR [options]\n\nData");
  cs::add_help_and_config(d, config);
  d.add_options()("train", po::value(&c.train_path)->required(), "training text (plain or .gz, UTF-8)")(
      "valid", po::value(&c.valid_path), "dev text for early stopping (default: hold out --valid-fraction)")(
      "valid-fraction", cellstate::defaulted(&c.valid_fraction),
      "share of the training text's end held out as dev text when there is no --valid (whole lines)");
  po::options_description model("Model"), tok("Tokenizer"), training("Training"), runtime("Runtime"),
      regular("Regularisation (AWD-LSTM, Merity et al. 2017; all off by default, the paper's values in brackets)");
  // A language model reads left to right: no --bidirectional to give.
  cs::add_model_options(model, c.model, {true, true, false});
  cs::add_flag(model, "tie", &c.tie, "share the embeddings with the output layer");
  cs::add_flag(model, "half", &c.half, "store weights as float16 (half the size)");
  tok.add_options()("vocab-size", cellstate::defaulted(&c.vocab_size), "SentencePiece vocabulary")(
      "spm-type", cellstate::defaulted(&c.spm_type), "unigram, bpe, char (character level) or word")(
      "spm-normalization", cellstate::defaulted(&c.spm_normalization),
      "SentencePiece normalisation: identity (text as written), nmt_nfkc, nfkc, nmt_nfkc_cf or nfkc_cf");
  auto& r = c.regularization;
  regular.add_options()("embed-dropout", po::value<double>()->notifier([&r](double v) { r.embed_dropout = v; }),
                        "dropout on the embeddings (default: --dropout) [0.4-0.65]")(
      "hidden-dropout", po::value<double>()->notifier([&r](double v) { r.hidden_dropout = v; }),
      "dropout between recurrent layers (default: --dropout) [0.2-0.3]");
  cs::add_flag(regular, "locked-dropout", &r.locked_dropout,
               "one dropout mask per sequence shared over time for the three dropouts [on]");
  regular.add_options()("vocabulary-dropout", cellstate::defaulted(&r.vocabulary_dropout),
                        "drop whole tokens from the embedding matrix [0.1]")(
      "weight-dropout", cellstate::defaulted(&r.weight_dropout),
      "DropConnect on the recurrent weights weight_hh, one mask per forward pass [0.5]")(
      "ar", cellstate::defaulted(&r.ar), "activation regularisation: alpha * mean of the squared outputs [2]")(
      "tar", cellstate::defaulted(&r.tar),
      "temporal activation regularisation: beta * mean squared change of the outputs [1]");
  cs::add_training_options(training, c.training);
  training.add_options()("bptt", cellstate::defaulted(&c.bptt),
                         "tokens per truncated backpropagation-through-time segment");
  cs::add_runtime_options(runtime, c.runtime);
  d.add(model).add(regular).add(tok).add(training).add(runtime);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " train", [&] {
        c.model.validate();
        c.training.validate();
        c.runtime.validate();
        if (c.vocab_size < 8) throw std::invalid_argument("--vocab-size must be >= 8");
        if (c.bptt < 1) throw std::invalid_argument("--bptt must be >= 1");
        if (!(c.valid_fraction > 0 && c.valid_fraction < 1))
          throw std::invalid_argument("--valid-fraction must be in (0, 1)");
      }, {nullptr, {}, "init-from", cs::textgen_inherited_options}))
    return *s;
  return cs::run_training(std::string(kProgram) + " train", c.training, c.runtime,
                          [&](const cs::ProcessGroup& group) { return cs::train_textgen(c, group); });
}

int eval(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  auto& m = u.model;
  std::string data;
  double tail = 0;
  bool json = false;
  po::options_description d("Usage: cellstate-textgen eval --data FILE [--model DIR] [options]\n\n"
                            "Loss per token, perplexity, nats and bits per character over the whole text\n"
                            "(one stream, state carried).\n\nOptions");
  d.add_options()("data", po::value(&data)->required(), "text to evaluate on (plain or .gz, UTF-8)")(
      "valid-fraction", cellstate::defaulted(&tail),
      "evaluate only the last part of FILE that train --valid-fraction holds out (0: all of it)");
  cs::add_flag(d, "json", &json, "print the metrics as JSON");
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " eval", [&] {
        u.validate();
        if (!(tail >= 0 && tail < 1)) throw std::invalid_argument("--valid-fraction must be in [0, 1)");
        cs::parse_implementation(m.impl);
      }))
    return *s;
  u.runtime.apply();
  auto model = cs::TextgenModel::load(m.dir, m.implementation(), m.verify);
  const auto e = cs::evaluate_textgen(model, data, tail, !u.runtime.quiet);
  if (json) {
    std::cout << e.to_json().dump(2) << "\n";
  } else {
    std::cout << std::fixed << "tokens          " << e.tokens << "\ncharacters      " << e.characters
              << std::setprecision(4) << "\nloss/token      " << e.loss_per_token() << " nats\nperplexity      "
              << std::setprecision(2) << e.perplexity() << std::setprecision(4) << "\nnats/char       "
              << e.nats_per_char() << "\nbits/char       " << e.bits_per_char() << "\n";
  }
  return 0;
}

struct GenerateCommand {
  cs::GenerateOptions options;
  int64_t num_samples = 1;
  uint64_t seed = 1;
  std::string format = "text";
};

// Generates the samples of one prompt, streaming text output as it comes.
// `echo`: the prompt is printed before its continuation, so each output
// reads as one text (not when the user has just typed it in a terminal).
void run_prompt(cs::TextgenModel& model, const std::string& prompt, const GenerateCommand& cmd, bool echo = true) {
  for (int64_t k = 0; k < cmd.num_samples; ++k) {
    const bool text = cmd.format == "text";
    if (text && cmd.num_samples > 1) std::cout << (k ? "\n" : "") << "--- sample " << k + 1 << " ---\n" << std::flush;
    bool ended_with_newline = !echo || prompt.empty() || prompt.back() == '\n';
    if (text && echo) std::cout << prompt << std::flush;
    const auto g = cs::generate_text(model, prompt, cmd.options, cmd.seed + static_cast<uint64_t>(k),
                                     [&](const std::string& s) {
                                       if (!text) return;
                                       std::cout << s << std::flush;
                                       ended_with_newline = s.back() == '\n';
                                     });
    if (k == 0 && g.unknown_characters > 0)
      std::cerr << kProgram << ": warning: the prompt has " << g.unknown_characters
                << " piece(s) of characters the model's vocabulary lacks; they are read as unknown\n";
    if (k == 0 && g.prompt_truncated)
      std::cerr << kProgram << ": warning: the prompt is longer than --max-prompt-tokens "
                << cmd.options.max_prompt_tokens << "; only its last tokens are read\n";
    if (text) {
      if (!ended_with_newline) std::cout << "\n";
    } else {
      std::cout << cs::generation_json(prompt, k + 1, cmd.seed + static_cast<uint64_t>(k), g).dump() << "\n";
    }
    std::cout << std::flush;
  }
}

int generate(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  auto& m = u.model;
  GenerateCommand cmd;
  auto& o = cmd.options;
  std::string prompt = kNoPrompt, prompt_file;
  std::vector<std::string> stops;
  po::options_description d(
      "Usage: cellstate-textgen generate [--model DIR] [--prompt TEXT | --prompt-file FILE] [options]\n\n"
      "Continues the prompt, streaming text as it is generated. Without --prompt or\n"
      "--prompt-file every line of standard input is a prompt (the model stays loaded),\n"
      "answered as soon as it arrives; from a pipe each text answer ends with a line ---.\n\nOptions");
  d.add_options()("prompt", po::value(&prompt), "the text to continue (may be empty: unconditional)")(
      "prompt-file", po::value(&prompt_file), "read the prompt from a file (all of it, line breaks kept)")(
      "max-tokens", cellstate::defaulted(&o.max_tokens), "tokens to generate at most")(
      "num-samples", cellstate::defaulted(&cmd.num_samples), "continuations per prompt")(
      "seed", cellstate::defaulted(&cmd.seed), "sampling seed (sample k uses seed + k - 1)")(
      "stop", po::value(&stops)->composing(),
      "end a continuation where this string appears, without it (repeatable; \\n is a line break)")(
      "max-prompt-tokens", cellstate::defaulted(&o.max_prompt_tokens),
      "longer prompts keep only their last tokens (with a warning)")(
      "format", cellstate::defaulted(&cmd.format),
      "text (streamed) or jsonl (one record per sample, with tokens and log-probabilities)");
  po::options_description sampling("Sampling");
  cs::add_sampling_options(sampling, o.sampling);
  cs::add_flag(sampling, "greedy", &o.sampling.greedy, "always take the most probable token instead of sampling");
  d.add(sampling);
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " generate", [&] {
        u.validate();
        o.sampling.validate();
        if (o.max_tokens < 1) throw std::invalid_argument("--max-tokens must be >= 1");
        if (cmd.num_samples < 1) throw std::invalid_argument("--num-samples must be >= 1");
        if (o.max_prompt_tokens < 1) throw std::invalid_argument("--max-prompt-tokens must be >= 1");
        if (cmd.format != "text" && cmd.format != "jsonl")
          throw std::invalid_argument("--format must be text or jsonl");
        if (prompt != kNoPrompt && !prompt_file.empty())
          throw std::invalid_argument("give --prompt or --prompt-file, not both");
        for (const auto& st : stops)
          if (st.empty()) throw std::invalid_argument("--stop must not be empty");
      }))
    return *s;
  for (const auto& st : stops) o.stop.push_back(unescape(st));
  u.runtime.apply();
  auto model = cs::TextgenModel::load(m.dir, m.implementation(), m.verify);
  if (!prompt_file.empty()) {
    std::string text = cs::read_text_file(prompt_file);
    if (!text.empty() && text.back() == '\n') text.pop_back();
    run_prompt(model, text, cmd);
    return 0;
  }
  if (prompt != kNoPrompt) {
    run_prompt(model, prompt, cmd);
    return 0;
  }
  // One prompt per line of standard input, each answered as soon as it
  // arrives. In a terminal the typed prompt is not repeated; from a pipe, in
  // text form, each answer ends with a line "---" (JSONL has one record per
  // sample).
  const bool interactive = isatty(STDIN_FILENO);
  cs::LineReader reader("-", cs::kMaxInputLineBytes, cs::LineReader::LongLines::kTruncate);
  std::string line;
  for (;;) {
    if (interactive) std::cerr << "> " << std::flush;
    if (!reader.next(line)) break;
    if (reader.truncated_from() > 0)
      std::cerr << kProgram << " generate: warning: <stdin>:" << reader.line_number() << ": a prompt of "
                << reader.truncated_from() << " bytes, cut to its first " << line.size() << " (input lines are capped at "
                << cs::kMaxInputLineBytes << " bytes)\n";
    run_prompt(model, line, cmd, !interactive);
    if (!interactive && cmd.format == "text") std::cout << "---\n" << std::flush;
  }
  if (interactive) std::cerr << "\n";
  return 0;
}

// PyTorch's word-language-model example at its documented sizes: the
// training configuration bench/word_lm.py runs too.
void word_lm_recipe(cs::LanguageModelOptions& lm, cs::TrainingOptions& t) {
  lm.embed(200).hidden(200).layers(2).dropout(0.2).tie(false);
  t.batch_size = 20;
  t.optimizer = cs::OptimizerKind::kSGD;
  t.lr = 20;
  t.clip = 0.25;
}
constexpr int64_t kRecipeBptt = 35;

int bench(int argc, char** argv) {
  cs::UseOptions u(kShippedModel);
  auto& m = u.model;
  std::string prompt = "ROMEO:", train_data, dump;
  int64_t tokens = 200, steps = 200;
  int repeat = 5;
  bool json = false;
  po::options_description d(
      "Usage: cellstate-textgen bench [--model DIR] [--train-data FILE] [options]\n\n"
      "Times generation of one stream: time to first token (prompt included) and\n"
      "milliseconds per further token, medians of --repeat runs. With --train-data,\n"
      "also training throughput at PyTorch's word-language-model recipe (embeddings 200,\n"
      "hidden 200, 2 LSTM layers, dropout 0.2, bptt 35, batch 20, SGD lr 20, clip 0.25)\n"
      "on FILE tokenised by the model's tokenizer (bench/word_lm.py runs the same in Python).\n\nOptions");
  d.add_options()("prompt", cellstate::defaulted(&prompt), "prompt to continue")(
      "tokens", cellstate::defaulted(&tokens), "tokens generated per run")(
      "repeat", cellstate::defaulted(&repeat), "timed runs (the median is reported)")(
      "train-data", po::value(&train_data), "also time training on this text")(
      "steps", cellstate::defaulted(&steps), "timed training steps (after 10 warm-up steps)")(
      "dump-ids", po::value(&dump), "write the training tokens as JSON (for bench/word_lm.py)");
  cs::add_flag(d, "json", &json, "print the result as JSON");
  u.add_to(d);
  if (auto s = cs::parse_command_line(argc, argv, d, std::string(kProgram) + " bench", [&] {
        u.validate();
        if (tokens < 2 || repeat < 1 || steps < 1)
          throw std::invalid_argument("--tokens must be >= 2, --repeat and --steps >= 1");
      }))
    return *s;
  const int threads = u.runtime.apply();
  auto model = cs::TextgenModel::load(m.dir, m.implementation(), m.verify);
  cs::GenerateOptions o;
  o.max_tokens = tokens;
  std::vector<double> first, per_token;
  cs::generate_text(model, prompt, o, 0);  // warm-up
  for (int r = 0; r < repeat; ++r) {
    const auto g = cs::generate_text(model, prompt, o, static_cast<uint64_t>(r + 1));
    first.push_back(g.first_token_ms);
    per_token.push_back((g.total_ms - g.first_token_ms) / static_cast<double>(std::max<size_t>(1, g.ids.size() - 1)));
  }
  const double ttft = cs::median(first), ms = cs::median(per_token);
  nlohmann::json result = {{"impl", m.impl},          {"threads", threads}, {"precision", cs::to_string(cs::matmul_precision())},        {"tokens", tokens},
                           {"first_token_ms", ttft}, {"ms_per_token", ms}, {"generated_tokens_per_s", 1000.0 / ms}};
  if (!train_data.empty()) {
    std::string text = cs::read_text_file(train_data);
    std::vector<int64_t> ids{cs::Tokenizer::kBosId};
    for (auto id : cs::encode_stream(model.tokenizer(), model.newline_id(), text, true)) ids.push_back(id);
    if (!dump.empty())
      cs::atomic_write(dump, nlohmann::json{{"vocab_size", model.tokenizer().vocab_size()}, {"ids", ids}}.dump());
    cs::LanguageModelOptions lm(model.tokenizer().vocab_size());
    lm.impl(m.implementation());
    cs::TrainingOptions t;
    word_lm_recipe(lm, t);
    const auto b = cs::benchmark_lm_training(ids, lm, t, kRecipeBptt, steps, 10);
    result["train_tokens_per_s"] = b.tokens_per_s;
    result["train_steps"] = b.steps;
    result["train_ms_per_step"] = 1000.0 * b.seconds / static_cast<double>(b.steps);
    result["vocab_size"] = model.tokenizer().vocab_size();
  }
  if (json) {
    std::cout << result.dump() << "\n";
    return 0;
  }
  std::cout << std::fixed << std::setprecision(2) << kProgram << " (" << m.impl << ", " << threads
            << " threads): first token " << ttft << " ms, then " << ms << " ms/token (" << std::setprecision(0)
            << 1000.0 / ms << " tokens/s), medians of " << repeat << " runs of " << tokens << " tokens\n";
  if (result.contains("train_tokens_per_s"))
    std::cout << "training, word-LM recipe (vocabulary " << result["vocab_size"] << "): "
              << result["train_tokens_per_s"].get<double>() << " tokens/s, " << std::setprecision(1)
              << result["train_ms_per_step"].get<double>() << " ms/step over " << steps << " steps\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cs::run_subcommands(argc, argv, kProgram, "recurrent language model and text generator",
                             {{"train", "train a language model on a text", train},
                              {"eval", "loss, perplexity, nats and bits per character on a text", eval},
                              {"generate", "continue prompts, streaming the text", generate},
                              {"bench", "time generation: first token and ms per token", bench},
                              cs::models_subcommand(kProgram, "textgen"),
                              cs::seal_subcommand(kProgram, "textgen", [](const std::string& dir) { cs::TextgenModel::load(dir, std::nullopt, false); }),
                              cs::quantize_subcommand(kProgram, kShippedModel, [](const std::string& dir, const auto& use) {
                                auto m = cs::TextgenModel::load(dir);
                                use({{"weights.pt", m.model().get()}});
                              })});
}
