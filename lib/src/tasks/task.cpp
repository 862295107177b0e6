#include "cellstate/tasks/task.h"

#include <iostream>

namespace cellstate {

void TaskLog::operator()(const std::string& line) const {
  if (!quiet_) std::cerr << line << "\n";
}

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

int exit_status(const TrainResult& result) { return result.interrupted() ? 130 : 0; }

}  // namespace cellstate
