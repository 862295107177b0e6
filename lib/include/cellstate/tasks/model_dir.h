#pragma once
// The model directory every app writes and reads:
//
//   DIR/config.json       task, format version, architecture, vocabularies,
//                         labels, training options, creation time
//   DIR/*.model           SentencePiece model(s)
//   DIR/weights.pt        the module's parameters and buffers (torch archive)
//   DIR/train_log.jsonl   one JSON object per evaluation during training
//   DIR/checkpoint.pt     the latest training checkpoint (for --resume)
//
// Every file is written atomically (temporary file, then rename), so an
// interrupted save never leaves a half-written model.

#include <torch/nn/module.h>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "cellstate/nn/rnn.h"
#include "cellstate/data/tokenizer.h"

namespace cellstate {

/// Bumped when a model directory written by this version cannot be read by
/// an older one (or the other way round).
constexpr int kModelFormatVersion = 1;

/// A config with "task", "format_version", "created" (UTC, ISO 8601) and
/// "cellstate_version" filled in.
nlohmann::json new_model_config(const std::string& task);

/// Creates DIR (and parents) if needed, then writes DIR/config.json atomically.
void write_model_config(const std::string& dir, const nlohmann::json& config);

/// Reads DIR/config.json and checks it is a model of `task` in this format
/// version; any problem is an InputError naming the file.
nlohmann::json read_model_config(const std::string& dir, const std::string& task);

/// InputError "FILE: config: MESSAGE".
[[noreturn]] void throw_config_error(const std::string& file, const std::string& message);

/// config[key] converted to T; a missing key or wrong type is an InputError
/// naming `file` and the key.
template <typename T>
T config_get(const nlohmann::json& config, const std::string& key, const std::string& file) {
  if (!config.contains(key)) throw_config_error(file, "missing key \"" + key + "\"");
  try {
    return config.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw_config_error(file, "key \"" + key + "\" has the wrong type (" +
                                 std::string(config.at(key).type_name()) + ")");
  }
}

/// Saves every parameter and buffer of `module` under its dotted name;
/// `half` stores floating tensors as float16 (halves the size; widened on
/// load). Atomic.
void save_weights(const torch::nn::Module& module, const std::string& path, bool half = false);

/// Loads weights saved by save_weights into `module`, which must have been
/// built from the same config: a missing file, a missing or extra tensor, or
/// a shape that differs is an InputError naming the file and the tensor.
void load_weights(torch::nn::Module& module, const std::string& path);

/// The implementation to run a loaded model with: `chosen` if given, else the
/// one it was trained with (config "model"."trained_impl", default custom).
Implementation model_implementation(const nlohmann::json& config, const std::string& file,
                                    std::optional<Implementation> chosen);

/// DIR/tokenizer.model, checked against config.json's "vocab_size" (a
/// mismatch is an InputError naming the files).
Tokenizer load_model_tokenizer(const std::string& dir, const nlohmann::json& config);

/// The tokenizer of a model being trained: with `resume`, the one already in
/// DIR/NAME; otherwise trained on `texts` and saved there.
Tokenizer train_model_tokenizer(const std::string& dir, bool resume, const std::vector<std::string>& texts,
                                const TokenizerTrainOptions& options, const std::string& name = "tokenizer.model");

/// Directory of the shipped model `name` (models/NAME): $CELLSTATE_MODELS/NAME
/// if set, else next to the executable (build/bin/../../models, or an
/// install's share/cellstate/models), else the source tree's models/.
std::string shipped_model_dir(const std::string& name);

/// DIR/NAME, checked to exist (InputError "missing file" otherwise).
std::string model_file(const std::string& dir, const std::string& name);

}  // namespace cellstate
