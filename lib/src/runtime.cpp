#include "cellstate/runtime.h"

#include <torch/torch.h>

#include <thread>

namespace cellstate {

int configure_threads(int requested) {
  int n = requested;
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
  return n;
}

std::string blas_info() {
  const std::string config = at::show_config();
  const auto pos = config.find("BLAS_INFO=");
  if (pos == std::string::npos) return "unknown";
  const auto end = config.find_first_of(",\n", pos);
  return config.substr(pos + 10, end == std::string::npos ? std::string::npos : end - pos - 10);
}

}  // namespace cellstate
