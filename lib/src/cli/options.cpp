#include "cellstate/cli/options.h"

#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cellstate/cli/cli.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/util/io.h"

namespace cellstate {

namespace po = boost::program_options;

namespace {

/// An enum option spelled as its name: the default shown is `to_name` of
/// the current value; the value given is parsed when the options are
/// notified (a bad name is a usage error naming the accepted ones).
template <typename Enum>
po::typed_value<std::string>* enum_value(Enum* variable, Enum (*parse)(const std::string&),
                                         std::string (*to_name)(Enum)) {
  return po::value<std::string>()
      ->default_value(to_name(*variable))
      ->notifier([variable, parse](const std::string& name) { *variable = parse(name); });
}

}  // namespace

void add_model_options(po::options_description& options, ModelOptions& m, ArchitectureOptions which) {
  options.add_options()("model", defaulted(&m.dir), "model directory")(
      "impl", defaulted(&m.impl),
      "recurrent implementation: custom (cellstate's fused kernels) or builtin (torch::nn)");
  if (!which.any) {
    add_flag(options, "verify", &m.verify,
             "check the model's files against its MANIFEST.json (--no-verify: load files edited by hand)");
    return;
  }
  if (which.rnn) options.add_options()("rnn", defaulted(&m.rnn), "recurrent cell: lstm, gru or rnn");
  options.add_options()("layers", defaulted(&m.layers), "stacked recurrent layers")(
      "hidden", defaulted(&m.hidden), "hidden units per direction")(
      "embed", defaulted(&m.embed), "embedding size")(
      "dropout", defaulted(&m.dropout), "dropout probability");
  if (which.bidirectional) add_flag(options, "bidirectional", &m.bidirectional, "bidirectional recurrent layers");
}

void add_sampling_options(po::options_description& options, SamplingOptions& s) {
  options.add_options()("temperature", defaulted(&s.temperature),
                        "divide the logits by this before sampling (< 1: safer, > 1: wilder)")(
      "top-k", defaulted(&s.top_k), "sample among the k most probable tokens only (0: all)")(
      "top-p", defaulted(&s.top_p), "sample among the fewest most probable tokens holding this probability (1: all)")(
      "repetition-penalty", defaulted(&s.repetition_penalty),
      "penalise tokens already in the input or output (1: off; 1.1-1.3 typical)");
}

void add_training_options(po::options_description& options, TrainingOptions& t) {
  options.add_options()("epochs", defaulted(&t.epochs), "maximum epochs")(
      "batch-size", defaulted(&t.batch_size), "examples per batch")(
      "lr", defaulted(&t.lr), "learning rate")(
      "optimizer", enum_value(&t.optimizer, parse_optimizer, to_string), "adam, adamw or sgd")(
      "weight-decay", defaulted(&t.weight_decay), "weight decay (decoupled for adamw)")(
      "momentum", defaulted(&t.momentum), "SGD momentum")(
      "clip", defaulted(&t.clip), "clip gradients to this global norm (0: off)")(
      "lr-schedule", enum_value(&t.lr_schedule, parse_lr_schedule, to_string),
      "constant, step (x lr-decay every lr-step epochs), plateau (x lr-decay after lr-step "
      "evaluations without improvement) or warmup-linear (linear warm-up over --warmup steps, "
      "then linear decay to 0)")(
      "lr-decay", defaulted(&t.lr_decay), "decay factor (step, plateau)")(
      "lr-step", defaulted(&t.lr_step), "epochs (step) or evaluations (plateau)")(
      "warmup", defaulted(&t.warmup), "warm-up steps (warmup-linear)")(
      "min-lr", defaulted(&t.min_lr), "lowest learning rate (step, plateau)")(
      "patience", defaulted(&t.patience),
      "early stopping: evaluations without improvement before stopping (0: never)")(
      "eval-every", defaulted(&t.eval_every), "evaluate every N steps (0: after each epoch)")(
      "nt-asgd", defaulted(&t.nt_asgd),
      "non-monotonically triggered weight averaging (AWD-LSTM's NT-ASGD): once dev is worse than the best of "
      "the evaluations before the last N, the average of the weights over the steps since is what is evaluated "
      "and kept (0: off; the paper: 5, with --optimizer sgd)")(
      "seed", defaulted(&t.seed), "random seed (initialisation, data order, dropout)")(
      "max-time", defaulted(&t.max_time), "stop training after this many minutes (0: no limit)")(
      "checkpoint-every", defaulted(&t.checkpoint_every),
      "also write a checkpoint every N minutes (0: only at evaluations)")(
      "init-from", po::value(&t.init_from),
      "fine-tune: start from this model (a directory or a shipped model's short name): its tokenizer, "
      "vocabulary and weights are kept, its architecture options are taken (a different one given here is an "
      "error), its labels come first and new ones are added; the lr defaults to half of its, --epochs to 10")(
      "freeze", po::value(&t.freeze),
      "fine-tune: keep these parameters fixed, comma-separated: embeddings (every embedding table and the "
      "character features), layers=K (the lowest K recurrent layers of the encoder), or parameter-name prefixes")(
      "nproc", defaulted(&t.nproc),
      "train data-parallel in N processes on this machine, each on 1/N of every batch (for several machines, "
      "start the command on each with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set; README)")(
      "dist-timeout", defaulted(&t.dist_timeout),
      "seconds the ranks of a data-parallel run wait for each other before giving up")(
      "dist-bucket-mb", defaulted(&t.dist_bucket_mb),
      "data-parallel gradient exchange: 0 = one all-reduce after the backward pass; B > 0 = c10d's Reducer "
      "(as PyTorch's DistributedDataParallel), buckets of B MB all-reduced while the backward pass runs");
  add_flag(options, "resume", &t.resume,
           "continue the run: an interrupted one from MODEL.partial/, a finished one (with more --epochs) from MODEL");
  add_flag(options, "overwrite", &t.overwrite,
           "replace the model already in MODEL (the old one stays until the new one is complete)");
}

void add_runtime_options(po::options_description& options, RuntimeOptions& r) {
  options.add_options()("threads", defaulted(&r.threads), "intra-op threads (0: OMP_NUM_THREADS if set, else the cores idle at start, so a busy machine gets fewer)")(
      "device", defaulted(&r.device), "cpu or cuda")(
      "precision", defaulted(&r.precision),
      "arithmetic of the matrix products: fp32; bf16 (bfloat16 operands, float32 sums; needs AVX512_BF16, "
      "else fp32 with a warning); int8 (use commands: dynamic quantization, int8 weights per output channel and "
      "activations per call); auto: int8 for a quantized model (quantize), else fp32");
  add_flag(options, "quiet,q", &r.quiet, "no progress output on stderr");
}

UseOptions::UseOptions(const std::string& shipped_model) : task_(shipped_model.substr(0, shipped_model.find('-'))) {
  model.dir = shipped_model_dir(shipped_model);
}

void UseOptions::add_to(po::options_description& options) {
  add_help_and_config(options, config);
  add_model_options(options, model, ArchitectureOptions{false});
  add_runtime_options(options, runtime);
}

void UseOptions::validate() {
  runtime.validate();
  parse_implementation(model.impl);
  model.dir = resolve_model_dir(task_, model.dir);
  runtime.resolve_precision(model.dir);
}

Subcommand models_subcommand(const std::string& program, const std::string& task) {
  auto run = [program, task](int argc, char** argv) {
    bool json = false;
    std::string config;
    po::options_description d("Usage: " + program + " models [--json]\n\n"
                              "The shipped " + task + " models (in " + shipped_models_root() + "): the short name\n"
                              "--model takes, size, training data and dev score.\n\nOptions");
    add_help_and_config(d, config);
    add_flag(d, "json", &json, "one JSON object per model");
    if (auto s = parse_command_line(argc, argv, d, program + " models")) return *s;
    if (!json)
      std::cout << std::left << std::setw(12) << "NAME" << " " << std::setw(28) << "DIRECTORY" << " " << std::right
                << std::setw(8) << "SIZE" << "  " << std::left << std::setw(40) << "DEV SCORE (the training run's)"
                << " TRAINED ON\n";
    for (const auto& m : shipped_models(task)) {
      const std::string path = m.dir + "/config.json";
      nlohmann::json c;
      try {
        c = nlohmann::json::parse(read_file(path));
      } catch (const std::exception&) {
        std::cerr << program << " models: " << path << ": not a readable model configuration (skipped)\n";
        continue;
      }
      uintmax_t bytes = 0;
      std::error_code ec;
      for (const auto& f : std::filesystem::directory_iterator(m.dir, ec))
        if (f.is_regular_file(ec)) bytes += f.file_size(ec);
      // The training data: "train", or "src_train" -> "tgt_train", as the last two parts of each path.
      auto tail = [](const std::string& p) {
        const auto slash = p.rfind('/');
        const auto before = slash == std::string::npos || slash == 0 ? std::string::npos : p.rfind('/', slash - 1);
        return before == std::string::npos ? p : p.substr(before + 1);
      };
      const auto data = c.value("data", nlohmann::json::object());
      std::string trained_on;
      if (data.contains("src_train") && data["src_train"].is_string() && data.contains("tgt_train") &&
          data["tgt_train"].is_string())
        trained_on = tail(data["src_train"].get<std::string>()) + " -> " + tail(data["tgt_train"].get<std::string>());
      else if (data.contains("train") && data["train"].is_string())
        trained_on = tail(data["train"].get<std::string>());
      nlohmann::json scores = nlohmann::json::object();
      const auto results = c.value("results", nlohmann::json::object());
      for (const auto& [key, value] : results.items())
        if ((key.rfind("dev_", 0) == 0 || key.rfind("valid_", 0) == 0) && value.is_number()) scores[key] = value;
      if (json) {
        std::cout << nlohmann::json{{"name", m.short_name}, {"directory", m.dir}, {"bytes", bytes},
                                    {"trained_on", trained_on}, {"dev", scores}}
                         .dump()
                  << "\n";
        continue;
      }
      std::ostringstream line;
      line << std::left << std::setw(12) << m.short_name << " " << std::setw(28) << m.name << " " << std::right
           << std::fixed << std::setprecision(1) << std::setw(5) << static_cast<double>(bytes) / 1e6 << " MB  ";
      std::string dev;
      for (const auto& [key, value] : scores.items()) {
        std::ostringstream v;
        v << std::setprecision(4) << std::defaultfloat << value.get<double>();
        dev += (dev.empty() ? "" : ", ") + key + " " + v.str();
      }
      line << std::left << std::setw(40) << dev << " " << trained_on;
      std::cout << line.str() << "\n";
    }
    return 0;
  };
  return {"models", "list the shipped models (short names for --model)", run};
}

Subcommand seal_subcommand(const std::string& program, const std::string& task,
                           std::function<void(const std::string& dir)> load_unverified) {
  auto run = [program, task, load_unverified](int argc, char** argv) {
    std::string dir, config;
    po::options_description d("Usage: " + program + " seal --model DIR\n\n"
                              "Checks that DIR loads as a " + task + " model, then writes its MANIFEST.json\n"
                              "(the size and SHA-256 of each file, which every load verifies): for a model\n"
                              "whose files you changed on purpose, or one from cellstate < 0.3.\n\nOptions");
    add_help_and_config(d, config);
    d.add_options()("model", po::value(&dir)->required(), "model directory");
    if (auto s = parse_command_line(argc, argv, d, program + " seal")) return *s;
    load_unverified(dir);
    write_manifest(dir, task);
    std::cerr << program << " seal: wrote " << dir << "/MANIFEST.json\n";
    return 0;
  };
  return {"seal", "write a model directory's manifest after checking it loads", run};
}

Subcommand quantize_subcommand(
    const std::string& program, const std::string& shipped_model,
    std::function<void(const std::string& dir, const std::function<void(const WeightModules&)>& use)> with_loaded) {
  const std::string task = shipped_model.substr(0, shipped_model.find('-'));
  auto run = [program, task, shipped_model, with_loaded](int argc, char** argv) {
    std::string dir = shipped_model_dir(shipped_model), output, config;
    bool overwrite = false;
    po::options_description d(
        "Usage: " + program + " quantize [--model DIR] --output DIR\n\n"
        "Writes a copy of the " + task + " model DIR with int8 weights (each weight matrix and embedding\n"
        "table as int8 rows with a float32 scale per row: about a quarter of the size). Every use\n"
        "command loads it and runs it with int8 products (dynamic quantization) unless --precision\n"
        "says otherwise.\n\nOptions");
    add_help_and_config(d, config);
    d.add_options()("model", defaulted(&dir), "the model to quantize: a directory, or a shipped model's name")(
        "output", po::value(&output)->required(), "the directory to write");
    add_flag(d, "overwrite", &overwrite, "replace a model already in OUTPUT");
    if (auto s = parse_command_line(argc, argv, d, program + " quantize", [&] {
          dir = resolve_model_dir(task, dir);
          if (output.empty()) throw std::invalid_argument("--output must not be empty");
        }))
      return *s;
    QuantizeResult result;
    with_loaded(dir, [&](const WeightModules& weights) {
      result = quantize_model_dir(dir, output, task, weights, overwrite);
    });
    std::cerr << program << " quantize: wrote " << output << " (weights " << std::fixed << std::setprecision(1)
              << static_cast<double>(result.bytes_before) / 1e6 << " MB -> "
              << static_cast<double>(result.bytes_after) / 1e6 << " MB, int8)\n";
    return 0;
  };
  return {"quantize", "write a copy of a model with int8 weights (a quarter of the size, int8 products)", run};
}

}  // namespace cellstate
