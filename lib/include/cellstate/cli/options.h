#pragma once
// The command-line spelling of the option groups every app shares (the
// README's "Command line"), defined once: each binds the fields of a plain
// library struct (tasks/options.h, train/options.h) to Boost.ProgramOptions,
// with the struct's current values as the defaults --help shows. An app sets
// its own defaults in the struct first.

#include <boost/program_options.hpp>

#include <torch/nn/module.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cellstate/cli/cli.h"
#include "cellstate/decode/sampling.h"
#include "cellstate/tasks/options.h"
#include "cellstate/train/options.h"

namespace cellstate {

/// Which architecture options a command offers: only those its model can
/// take (a language model is never bidirectional, so textgen does not list
/// --bidirectional).
struct ArchitectureOptions {
  bool any = true;            // false: only --model and --impl (use commands: the rest is in config.json)
  bool rnn = true;            // --rnn lstm|gru|rnn
  bool bidirectional = true;  // --bidirectional / --no-bidirectional
};

/// --model DIR, --impl and, for use commands (which.any false), --verify /
/// --no-verify; as `which` allows, --rnn, --layers, --hidden,
/// --embed, --dropout, --bidirectional.
void add_model_options(boost::program_options::options_description& options, ModelOptions& model,
                       ArchitectureOptions which = {});

/// The sampling options, spelled the same wherever sampling exists (textgen
/// generate, translate --sample): --temperature, --top-k, --top-p,
/// --repetition-penalty.
void add_sampling_options(boost::program_options::options_description& options, SamplingOptions& sampling);

/// --epochs, --batch-size, --lr, --optimizer, --weight-decay, --momentum,
/// --clip, --lr-schedule (+ --lr-decay, --lr-step, --warmup, --min-lr),
/// --patience, --eval-every, --seed, --resume, --overwrite, --max-time,
/// --checkpoint-every.
void add_training_options(boost::program_options::options_description& options, TrainingOptions& training);

/// --threads, --device, --quiet / --no-quiet.
void add_runtime_options(boost::program_options::options_description& options, RuntimeOptions& runtime);

/// What every command that uses a trained model offers: --help, --config,
/// --model (a directory, or a shipped model's short name; default: the
/// shipped model NAME, whose task is its first word), --impl, and the
/// runtime group.
struct UseOptions {
  explicit UseOptions(const std::string& shipped_model);
  ModelOptions model;
  RuntimeOptions runtime;
  std::string config;  // --config FILE.json

  void add_to(boost::program_options::options_description& options);
  /// Checks --impl and the runtime options, and turns a short --model name
  /// into its directory (throws std::invalid_argument).
  void validate();

 private:
  std::string task_;
};

/// `PROGRAM models [--json]`: the shipped models of `task`, with their short
/// names (what --model takes), size, training data and dev score.
Subcommand models_subcommand(const std::string& program, const std::string& task);

/// `PROGRAM seal --model DIR`: checks that DIR loads as a `task` model
/// (`load_unverified` loads it without the manifest check, throwing on any
/// problem), then writes its MANIFEST.json. For a model whose files were
/// edited on purpose, or one written before manifests existed.
Subcommand seal_subcommand(const std::string& program, const std::string& task,
                           std::function<void(const std::string& dir)> load_unverified);

/// The weights files of a loaded model and the modules loaded from them.
using WeightModules = std::vector<std::pair<std::string, const torch::nn::Module*>>;

/// `PROGRAM quantize [--model DIR] --output DIR [--overwrite]`: loads DIR
/// (by default the shipped model `shipped_model`, TASK-DATASET…) as a model
/// of its task (`with_loaded(dir, use)` loads it, verified, and calls `use`
/// with its weights files and modules while it lives), then writes OUTPUT:
/// the same model with int8 weights (quantize_model_dir), which use
/// commands run with int8 products by default.
Subcommand quantize_subcommand(
    const std::string& program, const std::string& shipped_model,
    std::function<void(const std::string& dir, const std::function<void(const WeightModules&)>& use)> with_loaded);

}  // namespace cellstate
