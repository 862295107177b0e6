#pragma once
// Fine-tuning: a `train --init-from SOURCE` run starts from a trained model
// of the same task instead of random weights.
//
//   kept from SOURCE    its tokenizer(s) and vocabularies (copied into the
//                       new model), its architecture (options that would not
//                       fit its weights are refused when the command line is
//                       read: tasks/options.h InheritedOptions), its weights
//   labels              SOURCE's first, then those only the new data has:
//                       the rows of the output layer (and of the CRF's
//                       transitions) of a shared label are SOURCE's, a new
//                       label's are initialised as in a fresh model
//   recorded            config.json "init_from": SOURCE's directory, task,
//                       weights SHA-256 and dev results
//
// --freeze keeps parameters fixed (requires_grad false: no gradient, no
// optimiser update): "embeddings" (every embedding table and a tagger's
// character features), "layers=K" (the lowest K layers of the encoder's
// recurrent stack, both directions), or parameter-name prefixes.

#include <torch/nn/module.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "cellstate/dist/process_group.h"
#include "cellstate/tasks/options.h"

namespace cellstate {

/// The model a fine-tuning run starts from.
class InitSource {
 public:
  /// `value`: a model directory or a shipped model's short name; its
  /// config.json is read (and its files verified) as `task`'s. An
  /// InputError naming the file when it is not a `task` model.
  InitSource(const std::string& task, const std::string& value);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }
  /// DIR/config.json, for messages.
  std::string config_file() const { return dir_ + "/config.json"; }
  /// "the model --init-from DIR starts from", for messages.
  std::string description() const;
  /// config.json's "init_from" record of the new model.
  nlohmann::json record() const;
  /// Copies SOURCE/NAME into `dir` (rank 0; the other ranks of a
  /// data-parallel run receive it) and returns the copy's path.
  std::string copy_file(const std::string& name, const std::string& dir, const ProcessGroup& group) const;

 private:
  std::string dir_;
  nlohmann::json config_;
};

/// The options every app's fine-tuning takes from SOURCE's config.json
/// "training" and "model": the learning rate (half SOURCE's), 10
/// epochs, the optimiser, clipping, batch size, dropout and weight storage
/// as defaults; the recurrent architecture (--layers, --hidden, --embed,
/// and --rnn and --bidirectional where the app has them) as fixed values.
/// Each app adds its own.
InheritedOptions common_inherited_options(const InitSource& source, bool rnn_option, bool bidirectional_option);

/// Adds SOURCE's SentencePiece tokenizer options (config.json "tokenizer":
/// --vocab-size, --spm-type, --spm-normalization) to `options` as fixed
/// values: a fine-tuned model keeps its source's tokenizer.
void inherit_tokenizer_options(const InitSource& source, InheritedOptions& options);

/// For each of `target` labels, the index of the same label in `source`, or -1.
std::vector<int64_t> label_mapping(const std::vector<std::string>& source, const std::vector<std::string>& target);

/// A tensor whose dimensions `dims` are indexed by label (an output layer's
/// weight rows, a CRF's transitions).
struct LabelledTensor {
  std::string name;           // dotted name in the module
  std::vector<int64_t> dims;  // the label-indexed dimensions
};

/// Copies every parameter and buffer of `source` into the same-named one of
/// `target`. A tensor of `labelled` takes, along its label dimensions, the
/// source's entry `mapping[i]` for target label i (a -1 keeps the target's
/// own initialisation). A name or shape that differs otherwise is an
/// InputError naming `source_file` and the tensor.
void copy_weights(const torch::nn::Module& source, torch::nn::Module& target,
                  const std::vector<LabelledTensor>& labelled, const std::vector<int64_t>& mapping,
                  const std::string& source_file);

/// Loads SOURCE's weights file `file` into `from` (a module built from
/// SOURCE's config.json) and copies them into `to` as copy_weights does.
void start_from(const InitSource& source, torch::nn::Module& from, const std::string& file, torch::nn::Module& to,
                const std::vector<LabelledTensor>& labelled = {}, const std::vector<int64_t>& mapping = {});

/// Which parameters --freeze's group names stand for in one model.
struct FreezeGroups {
  /// Prefixes of the parameters "embeddings" freezes.
  std::vector<std::string> embeddings;
  /// The recurrent stack "layers=K" counts in (e.g. "encoder."): parameters
  /// PREFIX*_lN and PREFIX*_lN_reverse with N < K.
  std::string recurrent_prefix;
  int64_t recurrent_layers = 0;
};

/// Applies --freeze `spec` to `module` (requires_grad false) and returns a
/// one-line summary ("froze 2 tensors, 1,024,000 parameters: ..."); an
/// empty spec freezes nothing (""). An item that matches no parameter, or
/// layers=K beyond the model's layers, is an std::invalid_argument naming
/// --freeze and what the model has.
std::string apply_freeze(torch::nn::Module& module, const std::string& spec, const FreezeGroups& groups);

/// How much of a fine-tuning run's text SOURCE's tokenizer (or vocabulary)
/// cannot represent: `unknown` of `total` tokens, e.g. "37 of 12,000
/// training tokens (0.31%) are unknown to SOURCE's tokenizer".
std::string coverage_message(int64_t unknown, int64_t total, const std::string& what, const InitSource& source);

}  // namespace cellstate
