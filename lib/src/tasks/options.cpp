#include "cellstate/tasks/options.h"

#include <torch/cuda.h>

#include <stdexcept>

#include "cellstate/tasks/model_dir.h"
#include "cellstate/util/runtime.h"

namespace cellstate {

void ModelOptions::validate() const {
  if (dir.empty()) throw std::invalid_argument("--model DIR is required");
  parse_recurrent_kind(rnn);
  parse_implementation(impl);
  if (layers < 1) throw std::invalid_argument("--layers must be >= 1, got " + std::to_string(layers));
  if (hidden < 1) throw std::invalid_argument("--hidden must be >= 1, got " + std::to_string(hidden));
  if (embed < 1) throw std::invalid_argument("--embed must be >= 1, got " + std::to_string(embed));
  if (dropout < 0 || dropout >= 1)
    throw std::invalid_argument("--dropout must be in [0, 1), got " + std::to_string(dropout));
}

nlohmann::json ModelOptions::to_json() const {
  return {{"rnn", rnn},       {"layers", layers},   {"hidden", hidden},
          {"embed", embed},   {"dropout", dropout}, {"bidirectional", bidirectional},
          {"trained_impl", impl}};
}

void ModelOptions::from_json(const nlohmann::json& j, const std::string& file) {
  rnn = config_get<std::string>(j, "rnn", file);
  layers = config_get<int64_t>(j, "layers", file);
  hidden = config_get<int64_t>(j, "hidden", file);
  embed = config_get<int64_t>(j, "embed", file);
  dropout = config_get<double>(j, "dropout", file);
  bidirectional = config_get<bool>(j, "bidirectional", file);
  try {
    parse_recurrent_kind(rnn);
  } catch (const std::exception& e) {
    throw_config_error(file, e.what());
  }
}

void RuntimeOptions::validate() const {
  if (threads < 0) throw std::invalid_argument("--threads must be >= 0, got " + std::to_string(threads));
  if (device != "cpu" && device != "cuda")
    throw std::invalid_argument("--device must be cpu or cuda, got '" + device + "'");
  if (device == "cuda" && !torch::cuda::is_available())
    throw std::invalid_argument("--device cuda: no CUDA device available to this LibTorch build");
}

int RuntimeOptions::apply() const { return configure_threads(threads); }

}  // namespace cellstate
