#pragma once
// What the four tasks' training functions share: their log lines, the
// model's size, the "weights" and "results" entries of config.json, and the
// exit status a train command ends with.

#include <torch/nn/module.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "cellstate/train/trainer.h"

namespace cellstate {

/// A task's messages while it trains: one line each on stderr, none when quiet.
class TaskLog {
 public:
  explicit TaskLog(bool quiet) : quiet_(quiet) {}
  void operator()(const std::string& line) const;

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

/// The exit status a train command ends with: 130 when it was interrupted
/// (a checkpoint was written), else 0.
int exit_status(const TrainResult& result);

}  // namespace cellstate
