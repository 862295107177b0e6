#pragma once
// What a task gives the training loop: its module, its batches, one step,
// an evaluation on dev and a way to save the best model.

#include <torch/nn/module.h>
#include <torch/serialize/archive.h>

#include <nlohmann/json.hpp>

#include <cstdint>

namespace cellstate {

/// What one training step did.
struct StepResult {
  double loss = 0;     // mean loss of the batch (this rank's share of it in a data-parallel run)
  int64_t tokens = 0;  // tokens (or examples) it covered, for throughput
  /// What the trainer back-propagates: the loss as a scalar tensor (in a
  /// data-parallel run, this rank's share of the batch's mean); undefined
  /// when this rank's shard of the batch is empty.
  torch::Tensor objective;
};

/// A dev-set evaluation: `score` is the metric early stopping follows.
struct Evaluation {
  double score = 0;
  nlohmann::json metrics;  // everything worth logging
};

/// What an app provides to the Trainer.
class TrainTask {
 public:
  virtual ~TrainTask() = default;
  /// The module being trained (its parameters are optimised and checkpointed).
  virtual torch::nn::Module& module() = 0;
  /// Prepares epoch `epoch` (0-based) and returns its number of batches. The
  /// batches must depend only on the seed and the epoch, so a resumed run
  /// sees the same ones.
  virtual int64_t begin_epoch(int64_t epoch) = 0;
  /// Forward pass on batch `index` of the current epoch; the trainer zeroes
  /// the gradients before, back-propagates StepResult::objective (exchanging
  /// gradients in a data-parallel run), clips and steps after.
  virtual StepResult train_step(int64_t index) = 0;
  /// Evaluates on the dev set (the trainer switches eval/train mode).
  virtual Evaluation evaluate() = 0;
  /// Writes the current model into the model directory (the new best).
  virtual void save_best() = 0;
  /// State of the task beyond the module's (e.g. a hidden state carried
  /// across batches), checkpointed with it.
  virtual void save_state(torch::serialize::OutputArchive& /*archive*/) {}
  virtual void load_state(torch::serialize::InputArchive& /*archive*/) {}
};

}  // namespace cellstate
