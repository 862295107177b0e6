#include "cellstate/tasks/task.h"

#include <iostream>

namespace cellstate {

void TaskLog::operator()(const std::string& line) const {
  if (!quiet_) std::cerr << line << "\n";
}

void TaskLog::always(const std::string& line) const { std::cerr << line << "\n"; }

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

nlohmann::json weights_entry(bool half, const std::string& file) {
  return {{"file", file}, {"dtype", half ? "float16" : "float32"}};
}

nlohmann::json training_results(const TrainResult& result, const std::string& score_key) {
  return {{score_key, result.best_score},
          {"best_epoch", result.best_epoch},
          {"best_step", result.best_step},
          {"steps", result.steps},
          {"training_seconds", result.seconds},
          {"stop_reason", to_string(result.stop_reason)}};
}

ModelWriteOptions write_options(const TrainingOptions& training) {
  ModelWriteOptions w;
  w.resume = training.resume;
  w.overwrite = training.overwrite;
  return w;
}

std::string already_finished_message(const std::string& dir, const TrainResult& result) {
  std::string how = "raise --epochs";
  if (result.stop_reason == StopReason::kEarlyStopping) how = "raise --patience (or set it to 0)";
  if (result.stop_reason == StopReason::kMaxTime) how = "raise --max-time";
  return dir + ": its training already ended (" + to_string(result.stop_reason) + ", after " +
         std::to_string(result.steps) + " steps); nothing to resume, the model is unchanged (" + how +
         " to train further)";
}

int exit_status(const TrainResult& result) { return result.interrupted() ? 128 + (result.signal ? result.signal : 2) : 0; }

}  // namespace cellstate
