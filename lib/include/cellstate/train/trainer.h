#pragma once
// The training loop every app uses: optimiser, gradient clipping, learning
// rate schedule, evaluation on dev with early stopping (the best model is the
// one kept), progress on stderr, train_log.jsonl, atomic checkpoints with
// everything needed to resume exactly, and SIGINT/SIGTERM handling.
//
//   Trainer::fit ── restore (checkpoint.h) or start the log
//     └─ per epoch: TrainTask::begin_epoch, then per batch
//          zero_grad → TrainTask::train_step → clip → LrSchedule → step
//          → progress line → evaluate? (log record, save best, early stop)
//          → interrupted? max-time? periodic checkpoint?
//
// Data-parallel (a ProcessGroup of N ranks): every rank runs the same loop
// over the same batches, its task training on its shard of each; after the
// backward pass the gradients, the loss, the token count and the stop
// signals (SIGINT/SIGTERM on any rank; --max-time and the checkpoint clock on
// rank 0) are summed over the ranks in one exchange, so every rank clips,
// steps and stops alike. Rank 0 alone evaluates (the score is broadcast),
// saves the best model, writes train_log.jsonl and the checkpoints (which
// hold every rank's random generator and the task's gathered state).

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "cellstate/dist/process_group.h"
#include "cellstate/train/options.h"
#include "cellstate/train/task.h"

namespace cellstate {

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
  /// Evaluate before the first step, as an evaluation like the others (a
  /// fine-tuned model's starting point: kept when training does not beat it).
  bool evaluate_first = false;

  /// The common case: `training` into `model_dir`, early stopping on `metric`
  /// (evaluate_first when training.init_from is set).
  static TrainerOptions of(const TrainingOptions& training, const std::string& model_dir, const std::string& metric,
                           bool quiet);
};

/// Why training stopped.
enum class StopReason {
  kEpochs,         // every epoch was trained
  kEarlyStopping,  // --patience evaluations without improvement
  kMaxTime,        // --max-time reached
  kInterrupted,    // SIGINT or SIGTERM (a checkpoint was written)
};
/// "epochs", "early-stopping", "max-time", "interrupted" (as config.json records it).
std::string to_string(StopReason reason);

struct TrainResult {
  double best_score = 0;
  int64_t best_epoch = 0;   // 1-based epoch of the best evaluation
  int64_t best_step = 0;
  int64_t steps = 0;
  double seconds = 0;
  StopReason stop_reason = StopReason::kEpochs;
  int signal = 0;                 // the signal that interrupted the run (SIGINT, SIGTERM)
  bool already_finished = false;  // --resume found a run that had ended under these options: nothing trained
  bool interrupted() const { return stop_reason == StopReason::kInterrupted; }
};

class Trainer {
 public:
  /// `group`: the ranks of a data-parallel run (default: this process alone).
  explicit Trainer(TrainerOptions options, ProcessGroup group = {});
  /// Trains until the epochs are done, early stopping, --max-time, or SIGINT
  /// (which writes a checkpoint first). With training.resume, continues from
  /// MODEL/checkpoint.pt.
  TrainResult fit(TrainTask& task);

 private:
  TrainerOptions options_;
  ProcessGroup group_;
};

}  // namespace cellstate
