#include "cellstate/runtime.h"

#include <torch/torch.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>
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

std::string shipped_model_dir(const std::string& name) {
  auto is_dir = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  };
  if (const char* env = std::getenv("CELLSTATE_MODELS")) return std::string(env) + "/" + name;
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string exe(buf, static_cast<size_t>(n));
    const std::string dir = exe.substr(0, exe.rfind('/'));
    for (const std::string& candidate : {dir + "/../../models/" + name, dir + "/../share/cellstate/models/" + name})
      if (is_dir(candidate)) {
        char resolved[PATH_MAX];
        return ::realpath(candidate.c_str(), resolved) ? std::string(resolved) : candidate;
      }
  }
#ifdef CELLSTATE_SOURCE_DIR
  return std::string(CELLSTATE_SOURCE_DIR) + "/models/" + name;
#else
  return "models/" + name;
#endif
}

}  // namespace cellstate
