#pragma once
// What the four tasks' training functions share: their log lines, the
// model's size, the "weights" and "results" entries of config.json, and the
// exit status a train command ends with.

#include <torch/nn/module.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "cellstate/tasks/model_dir.h"
#include "cellstate/train/trainer.h"

namespace cellstate {

/// A task's messages while it trains: one line each on stderr, none when quiet.
class TaskLog {
 public:
  explicit TaskLog(bool quiet) : quiet_(quiet) {}
  void operator()(const std::string& line) const;
  /// A line shown even when quiet: the outcome of the command itself.
  void always(const std::string& line) const;

 private:
  bool quiet_;
};

/// Number of parameters (elements) of `module`.
int64_t count_parameters(const torch::nn::Module& module);

/// config.json's "weights" entry: the file and how it is stored.
nlohmann::json weights_entry(bool half, const std::string& file = "weights.pt");

/// config.json's record of a finished run: the best dev score under
/// `score_key`, where and why training stopped, and how long it took.
nlohmann::json training_results(const TrainResult& result, const std::string& score_key);

/// What a train command may do with an existing model directory (--resume,
/// --overwrite).
ModelWriteOptions write_options(const TrainingOptions& training);

/// The line a --resume that found nothing left to train prints: where and
/// why the run ended, and which option trains on.
std::string already_finished_message(const std::string& dir, const TrainResult& result);

/// The exit status a train command ends with: 128 + the signal when it was
/// interrupted (130 for SIGINT, 143 for SIGTERM; a checkpoint was written),
/// else 0.
int exit_status(const TrainResult& result);

}  // namespace cellstate
