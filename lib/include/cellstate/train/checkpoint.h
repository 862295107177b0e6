#pragma once
// Training checkpoints: everything needed to continue a run exactly where it
// stopped (the module, the optimiser's moments, the schedule, the task's own
// state, the run's counters and the global CPU random generator), written
// atomically so an interrupted write never leaves a damaged checkpoint.

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cellstate/train/schedule.h"
#include "cellstate/train/task.h"

namespace cellstate {

/// The run's position and bookkeeping.
struct RunState {
  int64_t epoch = 0;        // current epoch, 0-based
  int64_t next_batch = 0;   // next batch of the current epoch
  int64_t step = 0;         // optimisation steps done
  int64_t best_epoch = 0;
  int64_t best_step = 0;
  int64_t bad_evaluations = 0;
  bool has_best = false;
  int64_t window_steps = 0;   // steps since the last evaluation
  int64_t window_tokens = 0;
  double best_score = 0;
  double elapsed = 0;         // seconds of training before this process
  double window_loss = 0;     // sum of step losses since the last evaluation
  double window_seconds = 0;
  std::vector<double> scores;  // every evaluation's score, in order (NT-ASGD's trigger reads them)
  bool averaging = false;      // NT-ASGD: the weights are being averaged
  int64_t averaged_steps = 0;  // steps in the average
};

/// What a checkpoint holds besides the RunState.
struct CheckpointParts {
  torch::nn::Module& module;
  torch::optim::Optimizer& optimizer;
  LrSchedule& schedule;
  TrainTask& task;
  /// NT-ASGD's running average of the trainable parameters (empty when not averaging).
  std::vector<torch::Tensor>& average;
};

/// Writes `parts`, `state` and the global CPU generator's state to `path`
/// atomically. `rank_generators` (data-parallel runs: every rank's generator
/// state, one row each, uint8) is kept beside them when defined.
void save_checkpoint(const std::string& path, const CheckpointParts& parts, const RunState& state,
                     const torch::Tensor& rank_generators = {});
/// What save_checkpoint writes, in memory (every rank of a data-parallel run
/// builds it, since the task's state may be gathered from all; rank 0 writes it).
std::string checkpoint_bytes(const CheckpointParts& parts, const RunState& state,
                             const torch::Tensor& rank_generators = {});

/// Only the RunState of the checkpoint at `path` (to prepare its epoch
/// before the task's own state is restored into it).
RunState read_run_state(const std::string& path);

/// Restores what save_checkpoint wrote. A missing checkpoint, or one that
/// does not fit the module and options, is an InputError naming `path`.
/// `rank_generators`, when given, receives the ranks' generator states the
/// checkpoint holds (undefined when it holds none: a one-process run's).
RunState load_checkpoint(const std::string& path, const CheckpointParts& parts,
                         torch::Tensor* rank_generators = nullptr);

}  // namespace cellstate
