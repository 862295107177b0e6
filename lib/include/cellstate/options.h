#pragma once
// The option groups every app shares (APPS.md), defined once. An app sets
// its own defaults in the struct, then calls add_to(); --help shows them.

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "cellstate/rnn.h"

namespace cellstate {

/// --model DIR, --rnn, --impl, --layers, --hidden, --embed, --dropout,
/// --bidirectional.
struct ModelOptions {
  std::string dir;               // model directory
  std::string rnn = "lstm";      // lstm | gru | rnn
  std::string impl = "custom";   // custom | builtin
  int64_t layers = 1;            // stacked recurrent layers
  int64_t hidden = 256;          // hidden units per direction
  int64_t embed = 128;           // embedding size
  double dropout = 0.3;          // dropout probability
  bool bidirectional = false;    // read both directions

  /// `architecture` false offers only --model and --impl (use commands, where
  /// the rest comes from the model's config).
  void add_to(boost::program_options::options_description& options, bool architecture = true);
  /// Throws std::invalid_argument naming the option.
  void validate() const;
  RecurrentKind kind() const { return parse_recurrent_kind(rnn); }
  Implementation implementation() const { return parse_implementation(impl); }
  /// Architecture fields (not dir or impl) for config.json, and back.
  nlohmann::json to_json() const;
  void from_json(const nlohmann::json& j, const std::string& file);
};

/// --epochs, --batch-size, --lr, --optimizer, --weight-decay, --clip,
/// --lr-schedule (+ --lr-decay, --lr-step, --warmup, --min-lr), --patience,
/// --eval-every, --seed, --resume, --max-time, --checkpoint-every.
struct TrainingOptions {
  int64_t epochs = 10;               // passes over the training data
  int64_t batch_size = 32;           // examples per batch
  double lr = 1e-3;                  // learning rate
  std::string optimizer = "adam";    // adam | adamw | sgd
  double weight_decay = 0.0;         // L2 (adam, sgd) or decoupled (adamw)
  double momentum = 0.0;             // sgd momentum
  double clip = 5.0;                 // clip gradients to this global norm (0: off)
  std::string lr_schedule = "constant";  // constant | step | plateau | warmup-linear
  double lr_decay = 0.5;             // factor for step and plateau
  int64_t lr_step = 1;               // step: decay every N epochs; plateau: after N bad evals
  int64_t warmup = 0;                // warmup-linear: warm-up steps
  double min_lr = 0.0;               // lower bound for step and plateau
  int64_t patience = 3;              // stop after N evaluations without improvement (0: never)
  int64_t eval_every = 0;            // evaluate every N steps (0: each epoch)
  uint64_t seed = 1;                 // seeds initialisation, data order, dropout
  bool resume = false;               // continue from MODEL/checkpoint.pt
  double max_time = 0;               // stop after this many minutes (0: no limit)
  double checkpoint_every = 10;      // also checkpoint every N minutes (0: only at evaluations)

  void add_to(boost::program_options::options_description& options);
  void validate() const;
  nlohmann::json to_json() const;
};

/// --threads, --device, --quiet.
struct RuntimeOptions {
  int threads = 0;               // 0: every core
  std::string device = "cpu";    // cpu | cuda
  bool quiet = false;            // no progress output

  void add_to(boost::program_options::options_description& options);
  void validate() const;
  /// Sets the thread count; returns the number of threads used.
  int apply() const;
};

/// What every command that uses a trained model offers: --help, --config,
/// --model (default: the shipped model NAME), --impl, and the runtime group.
struct UseOptions {
  explicit UseOptions(const std::string& shipped_model);
  ModelOptions model;
  RuntimeOptions runtime;
  std::string config;  // --config FILE.json

  void add_to(boost::program_options::options_description& options);
  /// Checks --impl and the runtime options (throws std::invalid_argument).
  void validate() const;
};

}  // namespace cellstate
