#include "cellstate/util/runtime.h"

#include <torch/torch.h>

#include <fstream>
#include <string>
#include <thread>

namespace cellstate {

int configure_threads(int requested) {
  int n = requested;
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
  return n;
}

std::string blas_info() {
  // Debian's LibTorch reports "generic" and links libblas.so.3, which the
  // alternatives system points at one implementation: name the file loaded.
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    if (path.find("libblas") != std::string::npos || path.find("openblas") != std::string::npos) {
      return path;
    }
  }
  return "unknown";
}

}  // namespace cellstate
