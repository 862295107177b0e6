#pragma once
// The option groups every app shares (see the README's "Command line"):
// the model's architecture and the runtime, as plain values with their
// defaults. An app sets its own defaults in the struct; cli/options.h gives
// each field its command-line spelling.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "cellstate/nn/rnn.h"
#include "cellstate/train/options.h"

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
  bool verify = true;            // check the model's files against its MANIFEST.json when loading

  /// Throws std::invalid_argument naming the option.
  void validate() const;
  RecurrentKind kind() const { return parse_recurrent_kind(rnn); }
  Implementation implementation() const { return parse_implementation(impl); }
  /// Architecture fields (not dir; impl as "trained_impl") for config.json, and back.
  nlohmann::json to_json() const;
  void from_json(const nlohmann::json& j, const std::string& file);
};

/// --threads, --device, --precision, --quiet.
struct RuntimeOptions {
  int threads = 0;               // 0: every core
  std::string device = "cpu";    // cpu | cuda
  // auto | fp32 | bf16 | int8: the products' arithmetic (nn/gemm.h); auto:
  // int8 for a quantized model (use commands, resolve_precision), else fp32
  std::string precision = "auto";
  bool quiet = false;            // no progress output

  void validate() const;
  /// Turns "auto" into the precision of the model in `model_dir`: int8 when
  /// its config.json says its weights are int8 (`quantize`), else fp32.
  void resolve_precision(const std::string& model_dir);
  /// Sets the thread count and the products' precision (bf16 on a CPU
  /// without AVX512_BF16: a warning on stderr, and fp32; int8 on a CPU
  /// without int8 kernels: std::invalid_argument); returns the number of
  /// threads used.
  int apply() const;
};

/// The training options as config.json records them ("training"), with the
/// products' precision the run trained at ("precision": fp32 | bf16, the
/// process's nn/gemm.h setting that --precision made).
nlohmann::json training_record(const TrainingOptions& training);

/// Option values a command takes from another source once its command line
/// and --config are read (a fine-tuning run's, from the model --init-from
/// names; cli.h CommandSpec::inherit), keyed by option name as in a --config
/// file.
struct InheritedOptions {
  /// Values that must hold: one given differently is an error; one not given takes this value.
  nlohmann::json fixed = nlohmann::json::object();
  /// Values used where neither the command line nor --config gives one.
  nlohmann::json defaults = nlohmann::json::object();
  /// What they come from, for messages ("the model --init-from DIR starts from").
  std::string source;
};

}  // namespace cellstate
