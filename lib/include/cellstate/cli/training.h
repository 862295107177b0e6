#pragma once
// How every app's `train` command runs: alone, as one rank of a
// data-parallel run whose ranks were started by hand or by torchrun (the
// environment names the rank: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
// or, with --nproc N, as the launcher of N ranks on this machine.

#include <functional>
#include <string>

#include "cellstate/dist/process_group.h"
#include "cellstate/tasks/options.h"
#include "cellstate/train/options.h"
#include "cellstate/train/trainer.h"

namespace cellstate {

/// Runs `train` as the options and the environment say; returns the exit
/// status. --nproc N > 1 (and no rank in the environment): starts N ranks of
/// this command (dist/launcher.h) and returns theirs. A rank: checks the
/// options against the run (--batch-size at least the ranks), makes ranks
/// other than 0 quiet, gives each rank its share of the cores when --threads
/// is not given, joins the group, trains, and meets the others at the end.
/// A rank whose communication threads fail ends with one line naming it.
int run_training(const std::string& program, TrainingOptions& training, RuntimeOptions& runtime,
                 const std::function<TrainResult(const ProcessGroup&)>& train);

}  // namespace cellstate
