#pragma once
// The training loop every app uses: optimiser, gradient clipping, learning
// rate schedule, evaluation on dev with early stopping (the best model is the
// one kept), progress on stderr, train_log.jsonl, atomic checkpoints with
// everything needed to resume exactly, and SIGINT handling.

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cellstate/options.h"

namespace cellstate {

/// What one training step did.
struct StepResult {
  double loss = 0;     // mean loss of the batch (what was back-propagated)
  int64_t tokens = 0;  // tokens (or examples) it covered, for throughput
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
  /// Forward and backward pass on batch `index` of the current epoch; the
  /// trainer zeroes gradients before, clips and steps after.
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

struct TrainerOptions {
  TrainingOptions training;
  std::string model_dir;
  std::string metric = "score";   // name of Evaluation::score in messages
  bool higher_is_better = true;
  bool quiet = false;
  std::string unit = "tok";       // what StepResult::tokens counts
  std::string checkpoint_name = "checkpoint.pt";  // in model_dir
  /// Fields added to every train_log.jsonl record (e.g. an ensemble member).
  nlohmann::json log_fields = nlohmann::json::object();
  /// Keep what train_log.jsonl already holds when starting afresh.
  bool append_log = false;

  /// The common case: `training` into `model_dir`, early stopping on `metric`.
  static TrainerOptions of(const TrainingOptions& training, const std::string& model_dir, const std::string& metric,
                           bool quiet);
};

struct TrainResult {
  double best_score = 0;
  int64_t best_epoch = 0;   // 1-based epoch of the best evaluation
  int64_t best_step = 0;
  int64_t steps = 0;
  double seconds = 0;
  /// "epochs", "early-stopping", "max-time" or "interrupted".
  std::string stop_reason;
};

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const TrainingOptions& options);

/// Learning rate as a function of training progress (see TrainingOptions).
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

class Trainer {
 public:
  explicit Trainer(TrainerOptions options);
  /// Trains until the epochs are done, early stopping, --max-time, or SIGINT
  /// (which writes a checkpoint first). With training.resume, continues from
  /// MODEL/checkpoint.pt.
  TrainResult fit(TrainTask& task);

 private:
  TrainerOptions options_;
};

}  // namespace cellstate
