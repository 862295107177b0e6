#pragma once
// The model directory every app writes and reads:
//
//   DIR/config.json       task, format version, architecture, vocabularies,
//                         labels, training options, creation time
//   DIR/*.model           SentencePiece model(s)
//   DIR/weights.pt        the module's parameters and buffers (torch archive)
//   DIR/train_log.jsonl   one JSON object per evaluation during training
//   DIR/checkpoint.pt     the latest training checkpoint (for --resume)
//   DIR/MANIFEST.json     written last: the SHA-256 and size of every other
//                         file (checkpoints aside), the task, the format
//                         version; every load verifies it
//
// Training writes a model as a transaction (ModelTransaction): everything
// goes into the sibling DIR.partial/, locked with flock(2) while a trainer
// uses it, and only a complete, fsync'ed model is swapped in for DIR with
// one rename. A failure at any point (a full disk, a signal, kill -9)
// leaves DIR exactly as it was; an interrupted run's checkpoint stays in
// DIR.partial/ for --resume.

#include <torch/nn/module.h>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cellstate/dist/process_group.h"
#include "cellstate/nn/rnn.h"
#include "cellstate/tasks/model_files.h"
#include "cellstate/data/tokenizer.h"

namespace cellstate {

/// A config with "task", "format_version", "created" (UTC, ISO 8601) and
/// "cellstate_version" filled in.
nlohmann::json new_model_config(const std::string& task);

/// Creates DIR (and parents) if needed, then writes DIR/config.json atomically.
void write_model_config(const std::string& dir, const nlohmann::json& config);

/// Writes DIR/MANIFEST.json for the files now in DIR: format version, task,
/// cellstate version, and for every regular file but the manifest itself,
/// checkpoints and temporaries, its size and SHA-256; the tokenizers
/// (*.model) are also listed with their piece counts.
void write_manifest(const std::string& dir, const std::string& task);

/// What `train` may do with a model directory that already holds something.
struct ModelWriteOptions {
  bool resume = false;     // continue the interrupted (or finished) run of DIR
  bool overwrite = false;  // replace the model in DIR, or discard an interrupted run
};

/// A model directory written as a transaction (see the top of this file).
///
/// Opening one locks DIR.partial/ (a second trainer fails at once, naming
/// the first one's PID), puts back a model a crashed swap left aside, and
/// decides what the run starts from:
///   --resume     DIR.partial/'s checkpoint (an interrupted run), else a copy
///                of DIR with its checkpoint (a finished run trained further);
///                neither is an InputError
///   otherwise    a fresh DIR.partial/: an existing model in DIR, or an
///                interrupted run in DIR.partial/, is refused unless
///                --overwrite; a directory holding anything that is not a
///                cellstate model is always refused
/// commit() writes the manifest, fsyncs every file, and swaps DIR.partial/
/// in for DIR (renameat2 RENAME_EXCHANGE, the old model then removed).
/// Destroyed without commit(), it keeps DIR.partial/ when it holds a
/// checkpoint to resume and removes it otherwise.
class ModelTransaction {
 public:
  /// In a data-parallel run (`group`), rank 0 alone works on DIR; the other
  /// ranks get a private scratch directory, removed when they end, and
  /// commit() does nothing for them.
  ModelTransaction(const std::string& dir, const std::string& task, ModelWriteOptions options,
                   const ProcessGroup& group = {});
  ~ModelTransaction();
  ModelTransaction(const ModelTransaction&) = delete;
  ModelTransaction& operator=(const ModelTransaction&) = delete;

  /// Where the run writes: DIR.partial until commit(), DIR after.
  const std::string& path() const { return committed_ && !scratch_ ? target_ : staging_; }
  /// DIR.
  const std::string& target() const { return target_; }
  /// Whether the run continues from a checkpoint now in path().
  bool resuming() const { return resuming_; }
  /// Whether that checkpoint is a finished model's (copied from DIR), not an
  /// interrupted run's: when it has nothing left to train, DIR stays as it is.
  bool resuming_finished() const { return resuming_finished_; }
  /// Makes the model in path() the model in DIR (see above).
  void commit();

 private:
  void lock();
  void recover_swap();
  void prepare(const ModelWriteOptions& options);
  void clear_staging();
  void release() noexcept;

  std::string target_, staging_, task_;
  int lock_fd_ = -1;
  bool scratch_ = false;  // a data-parallel rank other than 0: staging_ is its scratch directory
  bool resuming_ = false;
  bool resuming_finished_ = false;
  bool committed_ = false;
};

/// How save_weights stores the floating tensors of a model.
enum class WeightStorage {
  kFloat32,
  kFloat16,  // every floating tensor as float16 (half the size; widened on load)
  kInt8,     // 2-D parameters of >= 1024 values (weight matrices, embedding
             // tables) as int8 rows with a float32 scale per row, symmetric:
             // w[r, :] ≈ scale[r] · q[r, :], scale[r] = max |w[r, :]| / 127
             // (about a quarter of the size; `quantize` writes them); the
             // rest float32. Loading widens them to float32, the values int8
             // products quantize back to the same integers.
};

/// Saves every parameter and buffer of `module` under its dotted name, the
/// floating ones as `storage` says. Atomic.
void save_weights(const torch::nn::Module& module, const std::string& path, WeightStorage storage);
/// `half`: WeightStorage::kFloat16, else kFloat32.
void save_weights(const torch::nn::Module& module, const std::string& path, bool half = false);

/// Loads weights saved by save_weights into `module`, which must have been
/// built from the same config: a missing file, a missing or extra tensor, a
/// shape that differs, or a value that is NaN or infinite is an InputError
/// naming the file and the tensor. Unless `verified` (the file's SHA-256 was
/// checked against the model's manifest), the archive's every record but the
/// tensors' values is first compared with what save_weights writes for
/// `module` (damaged archives can crash LibTorch's reader or make it allocate
/// gigabytes).
void load_weights(torch::nn::Module& module, const std::string& path, bool verified = false);

/// What quantize_model_dir did: the weights files' bytes before and after.
struct QuantizeResult {
  int64_t bytes_before = 0, bytes_after = 0;
};

/// `PROGRAM quantize`: writes model directory `to` (a transaction, as
/// training writes one; an existing model is replaced only with
/// `overwrite`) holding the model in `from` with its weights files stored
/// as WeightStorage::kInt8: each (file name, module loaded from it) of
/// `weights`; every other file of `from` copied; config.json's "weights"
/// entry says "dtype": "int8" and where the model came from (use commands
/// then default to --precision int8).
QuantizeResult quantize_model_dir(const std::string& from, const std::string& to, const std::string& task,
                                  const std::vector<std::pair<std::string, const torch::nn::Module*>>& weights,
                                  bool overwrite);

/// The implementation to run a loaded model with: `chosen` if given, else the
/// one it was trained with (config "model"."trained_impl", default custom).
Implementation model_implementation(const nlohmann::json& config, const std::string& file,
                                    std::optional<Implementation> chosen);

/// DIR/tokenizer.model, checked against config.json's "vocab_size" (a
/// mismatch is an InputError naming the files).
Tokenizer load_model_tokenizer(const std::string& dir, const nlohmann::json& config);

/// The tokenizer of a model being trained: with `resume`, the one already in
/// DIR/NAME; otherwise trained on `texts` and saved there. In a data-parallel
/// run rank 0 does that and the other ranks receive its file.
Tokenizer train_model_tokenizer(const std::string& dir, bool resume, const std::vector<std::string>& texts,
                                const TokenizerTrainOptions& options, const std::string& name = "tokenizer.model",
                                const ProcessGroup& group = {});

/// The folder of the shipped models: $CELLSTATE_MODELS if set, else next to
/// the executable (build/bin/../../models, or an install's
/// share/cellstate/models), else the source tree's models/.
std::string shipped_models_root();

/// Directory of the shipped model `name`: shipped_models_root()/NAME.
std::string shipped_model_dir(const std::string& name);

/// A shipped model of one task: models/TASK-DATASET[-VARIANT]/.
struct ShippedModel {
  std::string name;   // the directory's name: translate-multi30k-en-fr
  std::string short_name;  // what follows TASK-DATASET- (en-fr), or DATASET when nothing does (sst2)
  std::string dir;    // its path
};
/// The shipped models of `task` (directories named TASK-*), sorted by name.
std::vector<ShippedModel> shipped_models(const std::string& task);

/// What --model VALUE names for `task`: VALUE itself when it is a directory
/// (or contains a '/'); otherwise the shipped model of `task` whose name or
/// short name it is (`en-fr`, `translate-multi30k-en-fr`, `multi30k-en-fr`).
/// A name no shipped model has is an std::invalid_argument naming `option`
/// and listing them.
std::string resolve_model_dir(const std::string& task, const std::string& value,
                              const std::string& option = "--model");

/// DIR/NAME, checked to exist (InputError "missing file" otherwise).
std::string model_file(const std::string& dir, const std::string& name);

}  // namespace cellstate
