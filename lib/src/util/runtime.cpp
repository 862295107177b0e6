#include "cellstate/util/runtime.h"

#include "cellstate/util/allocator.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include <malloc.h>

namespace cellstate {

namespace {

/// Idle and total jiffies of all CPUs (the first line of /proc/stat); false
/// when it cannot be read.
bool cpu_times(uint64_t& idle, uint64_t& total) {
  std::ifstream stat("/proc/stat");
  std::string cpu;
  if (!(stat >> cpu) || cpu != "cpu") return false;
  uint64_t v = 0;
  idle = total = 0;
  for (int field = 0; field < 8 && (stat >> v); ++field) {
    total += v;
    if (field == 3 || field == 4) idle += v;  // idle, iowait
  }
  return total > 0;
}

}  // namespace

int idle_cores(int sample_ms) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  uint64_t idle0 = 0, total0 = 0, idle1 = 0, total1 = 0;
  if (!cpu_times(idle0, total0)) return cores;
  std::this_thread::sleep_for(std::chrono::milliseconds(sample_ms));
  if (!cpu_times(idle1, total1) || total1 <= total0) return cores;
  const double idle_share = static_cast<double>(idle1 - idle0) / static_cast<double>(total1 - total0);
  return std::clamp(static_cast<int>(std::lround(idle_share * cores)), 1, cores);
}

void configure_allocator() {
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_")) ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
  if (!std::getenv("MALLOC_TRIM_THRESHOLD_")) ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  CachingAllocatorOptions options;
  if (const char* env = std::getenv("CELLSTATE_CPU_CACHE_MB")) {
    char* end = nullptr;
    const long mb = std::strtol(env, &end, 10);
    if (end == env || *end != '\0' || mb < 0) {
      throw std::invalid_argument(std::string("CELLSTATE_CPU_CACHE_MB=") + env +
                                  ": expected a whole number of megabytes (0: no caching allocator)");
    }
    if (mb == 0) return;
    options.max_cached_bytes(static_cast<size_t>(mb) << 20);
  }
  install_caching_cpu_allocator(options);
}

int configure_threads(int requested) {
  configure_allocator();
  int n = requested;
  if (n <= 0) {
    // OMP_NUM_THREADS, when set to a count, is the user's default; otherwise the idle cores.
    const char* env = std::getenv("OMP_NUM_THREADS");
    char* end = nullptr;
    const long from_env = env != nullptr ? std::strtol(env, &end, 10) : 0;
    n = from_env > 0 && end != nullptr && *end == '\0' ? static_cast<int>(std::min<long>(from_env, 1024)) : idle_cores();
  }
  torch::set_num_threads(n);
  return n;
}


std::string version() { return CELLSTATE_VERSION; }

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
