#include "cellstate/tasks/options.h"

#include <torch/cuda.h>

#include <algorithm>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "cellstate/nn/gemm.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/util/io.h"
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
  // Sizes a model could not have been trained with (a hand-edited or
  // damaged config) are refused before anything is allocated.
  auto size = [&](const char* key, int64_t v, int64_t most) {
    if (v < 1 || v > most)
      throw_config_error(file, std::string("\"") + key + "\" must be in [1, " + std::to_string(most) + "], got " +
                                   std::to_string(v));
  };
  size("layers", layers, 64);
  size("hidden", hidden, 65536);
  size("embed", embed, 65536);
  if (!(dropout >= 0 && dropout < 1))
    throw_config_error(file, "\"dropout\" must be in [0, 1), got " + std::to_string(dropout));
}

void RuntimeOptions::validate() const {
  if (threads < 0) throw std::invalid_argument("--threads must be >= 0, got " + std::to_string(threads));
  // More threads than a few per core only slow the work (and thousands
  // would exhaust the machine).
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (threads > 4 * cores)
    throw std::invalid_argument("--threads must be at most " + std::to_string(4 * cores) + " (4 x the " +
                                std::to_string(cores) + " cores), got " + std::to_string(threads));
  if (device != "cpu" && device != "cuda")
    throw std::invalid_argument("--device must be cpu or cuda, got '" + device + "'");
  if (device == "cuda" && !torch::cuda::is_available())
    throw std::invalid_argument("--device cuda: no CUDA device available to this LibTorch build");
  if (precision == "auto") return;
  try {
    parse_matmul_precision(precision);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--") + e.what() + " (or auto)");
  }
}

void RuntimeOptions::resolve_precision(const std::string& model_dir) {
  if (precision != "auto") return;
  precision = "fp32";
  // An unreadable config is reported by the model's load, which follows.
  try {
    const auto config = nlohmann::json::parse(read_file(model_dir + "/config.json"));
    const auto weights = config.value("weights", nlohmann::json());
    if (weights.is_object() && weights.value("dtype", std::string()) == "int8") precision = "int8";
  } catch (const std::exception&) {
  }
}

int RuntimeOptions::apply() const {
  auto p = precision == "auto" ? MatmulPrecision::kFloat32 : parse_matmul_precision(precision);
  try {
    check_cpu_supports(p);
  } catch (const std::invalid_argument& e) {
    if (p != MatmulPrecision::kBFloat16) throw std::invalid_argument("--precision " + precision + ": " + e.what());
    std::cerr << "warning: --precision bf16: " << e.what() << "; computing in fp32\n";
    p = MatmulPrecision::kFloat32;
  }
  set_default_matmul_precision(p);
  return configure_threads(threads);
}

nlohmann::json training_record(const TrainingOptions& training) {
  auto j = training.to_json();
  j["precision"] = to_string(matmul_precision());
  return j;
}

}  // namespace cellstate
