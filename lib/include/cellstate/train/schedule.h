#pragma once
// The optimiser and the learning rate as a function of training progress.

#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "cellstate/train/options.h"

namespace cellstate {

/// Adam, AdamW (their fused steps, train/optimizers.h) or SGD (with
/// momentum) over `parameters`, as `options` asks.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const TrainingOptions& options);

/// Sets the learning rate of every parameter group.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

/// Learning rate as a function of training progress (see LrScheduleKind).
class LrSchedule {
 public:
  LrSchedule(const TrainingOptions& options, int64_t total_steps);
  double lr() const { return lr_; }
  void set_total_steps(int64_t total) { total_steps_ = total; }
  /// After optimisation step `step` (1-based).
  void after_step(int64_t step);
  /// After epoch `epoch` (1-based) ends.
  void after_epoch(int64_t epoch);
  /// After an evaluation.
  void after_evaluation(bool improved);
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

 private:
  TrainingOptions options_;
  int64_t total_steps_;
  double lr_;
  int64_t bad_evaluations_ = 0;
};

}  // namespace cellstate
