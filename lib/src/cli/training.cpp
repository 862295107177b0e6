#include "cellstate/cli/training.h"

#include <cstdlib>
#include <exception>
#include <iostream>
#include <stdexcept>

#include <unistd.h>

#include "cellstate/dist/launcher.h"
#include "cellstate/tasks/task.h"
#include "cellstate/util/runtime.h"

namespace cellstate {

namespace {

/// "PROGRAM: rank R of N", for the terminate handler (set once, before the group exists).
std::string& terminate_prefix() {
  static std::string prefix;
  return prefix;
}

/// Gloo's transport threads throw when a peer's connection breaks at some
/// moments (a rank killed mid-exchange); nothing can catch that in those
/// threads, so the process ends here with one line instead of an abort.
[[noreturn]] void on_terminate() {
  std::string what = "unknown error";
  if (auto e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      what = x.what();
    } catch (...) {
    }
  }
  what = what.substr(0, what.find('\n'));
  std::cerr << terminate_prefix() << ": communication with another rank failed (it stopped, or the network failed): "
            << what << std::endl;
  std::_Exit(1);
}

}  // namespace

int run_training(const std::string& program, TrainingOptions& training, RuntimeOptions& runtime,
                 const std::function<TrainResult(const ProcessGroup&)>& train) {
  if (runtime.precision == "int8")
    throw std::invalid_argument("--precision int8 is for use commands (int8 products are inference only; "
                                "`quantize` writes an int8 copy of a trained model): train with fp32 or bf16");
  const bool in_environment = std::getenv("WORLD_SIZE") != nullptr;
  if (training.nproc > 1 && !launched_by_cellstate()) {
    if (in_environment)
      throw std::invalid_argument("--nproc starts its own ranks, but WORLD_SIZE is set: give --nproc, or start each "
                                  "rank yourself with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, not both");
    if (training.batch_size < training.nproc)
      throw std::invalid_argument("--batch-size " + std::to_string(training.batch_size) + " is smaller than the " +
                                  std::to_string(training.nproc) +
                                  " ranks (each trains on its share of every batch)");
    LaunchOptions launch;
    launch.nproc = training.nproc;
    launch.program = program;
    launch.threads = runtime.threads;
    return launch_workers(launch);
  }
  const auto options = DistributedOptions::from_environment(training.dist_timeout);
  if (options.distributed()) {
    if (training.batch_size < options.world_size)
      throw std::invalid_argument("--batch-size " + std::to_string(training.batch_size) + " is smaller than the " +
                                  std::to_string(options.world_size) +
                                  " ranks (each trains on its share of every batch)");
    if (options.rank != 0) runtime.quiet = true;
    if (runtime.threads == 0 && !std::getenv("OMP_NUM_THREADS"))
      runtime.threads = std::max(1, idle_cores() / static_cast<int>(options.local_world_size));
    terminate_prefix() = program + ": rank " + std::to_string(options.rank) + " of " +
                         std::to_string(options.world_size);
    std::set_terminate(on_terminate);
  }
  runtime.apply();
  const ProcessGroup group(options);
  const TrainResult result = train(group);
  group.barrier();
  return exit_status(result);
}

}  // namespace cellstate
