#include "cellstate/train/trainer.h"

#include <torch/nn/utils/clip_grad.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <unistd.h>

#include "cellstate/train/checkpoint.h"
#include "cellstate/train/schedule.h"
#include "cellstate/util/interrupt.h"
#include "cellstate/util/io.h"
#include "cellstate/util/progress.h"

namespace cellstate {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// One call of Trainer::fit: the loop and the pieces it is made of.
class TrainingRun {
 public:
  TrainingRun(const TrainerOptions& options, TrainTask& task)
      : options_(options), t_(options.training), task_(task), module_(task.module()),
        parameters_(module_.parameters()), optimizer_(make_optimizer(parameters_, t_)),
        batches_(task.begin_epoch(0)), schedule_(t_, t_.epochs * batches_),
        progress_(options.quiet, options.unit), checkpoint_path_(options.model_dir + "/" + options.checkpoint_name),
        log_path_(options.model_dir + "/train_log.jsonl") {}

  TrainResult run() {
    start();
    if (already_finished_) {
      stopped_ = true;
      stop_reason_ = finished_reason();
    }
    module_.train();
    while (!stopped_ && state_.epoch < t_.epochs) {
      prepare_epoch();
      train_epoch();
      if (stopped_) break;
      ++state_.epoch;
      state_.next_batch = 0;
      schedule_.after_epoch(state_.epoch);
      if (t_.eval_every == 0 && evaluate()) {
        finish(StopReason::kEarlyStopping);
        break;
      }
      save();
    }
    TrainResult r;
    r.best_score = state_.best_score;
    r.best_epoch = state_.best_epoch;
    r.best_step = state_.best_step;
    r.steps = state_.step;
    r.seconds = elapsed();
    r.stop_reason = stop_reason_;
    r.signal = stop_reason_ == StopReason::kInterrupted ? interrupts_.signal() : 0;
    r.already_finished = already_finished_;
    return r;
  }

 private:
  /// Restores the checkpoint with --resume; otherwise starts the log afresh.
  void start() {
    if (t_.resume) {
      // The epoch is prepared first, then the task's state restored into it
      // (a language model's hidden state carried across batches).
      const RunState saved = read_run_state(checkpoint_path_);
      if (saved.epoch != 0) {
        batches_ = task_.begin_epoch(saved.epoch);
        prepared_epoch_ = saved.epoch;
      }
      state_ = load_checkpoint(checkpoint_path_, parts());
      already_finished_ = finished_reason_of_state();
      progress_.message("resuming from " + checkpoint_path_ + " at epoch " + std::to_string(state_.epoch + 1) +
                        ", batch " + std::to_string(state_.next_batch) + ", step " + std::to_string(state_.step) +
                        (already_finished_ ? " (its training had ended: " + to_string(finished_reason()) + ")" : ""));
    } else if (!options_.append_log) {
      atomic_write(log_path_, "");
    }
    window_base_ = state_.window_seconds;
    elapsed_before_ = state_.elapsed;
    window_start_ = started_ = last_checkpoint_ = Clock::now();
  }

  /// Whether the checkpoint restored is of a run that already ended under
  /// the present options (its epochs done, early stopping, --max-time).
  bool finished_reason_of_state() const {
    return state_.epoch >= t_.epochs || (t_.patience > 0 && state_.bad_evaluations >= t_.patience) ||
           (t_.max_time > 0 && state_.elapsed >= t_.max_time * 60);
  }
  StopReason finished_reason() const {
    if (state_.epoch >= t_.epochs) return StopReason::kEpochs;
    if (t_.patience > 0 && state_.bad_evaluations >= t_.patience) return StopReason::kEarlyStopping;
    return StopReason::kMaxTime;
  }

  CheckpointParts parts() { return {module_, *optimizer_, schedule_, task_}; }

  /// Seconds trained, this process and the ones before it.
  double elapsed() const { return elapsed_before_ + seconds_since(started_); }
  double window_seconds() const { return window_base_ + seconds_since(window_start_); }

  void save() {
    state_.elapsed = elapsed();
    state_.window_seconds = window_seconds();
    save_checkpoint(checkpoint_path_, parts(), state_);
    last_checkpoint_ = Clock::now();
  }

  void finish(StopReason reason) {
    save();
    stop_reason_ = reason;
    stopped_ = true;
  }

  void interrupt() {
    finish(StopReason::kInterrupted);
    progress_.message("interrupted by " + Interrupted::name(interrupts_.signal()) + ": checkpoint written to " +
                      checkpoint_path_ + " (continue with --resume)");
  }

  void prepare_epoch() {
    if (prepared_epoch_ == state_.epoch) return;
    batches_ = task_.begin_epoch(state_.epoch);
    prepared_epoch_ = state_.epoch;
  }

  void train_epoch() {
    const auto epoch_start = Clock::now();
    const int64_t first_batch = state_.next_batch;
    for (int64_t b = state_.next_batch; b < batches_ && !stopped_; ++b) {
      if (interrupts_.requested()) {  // a signal before this step (during start-up or an evaluation)
        interrupt();
        break;
      }
      train_step(b);
      show_progress(b, first_batch, seconds_since(epoch_start));
      after_step();
    }
  }

  void train_step(int64_t b) {
    optimizer_->zero_grad();
    const StepResult r = task_.train_step(b);
    if (!std::isfinite(r.loss))
      throw std::runtime_error("the training loss became " + std::to_string(r.loss) + " at step " +
                               std::to_string(state_.step + 1) + " (try a lower --lr or a --clip)");
    if (t_.clip > 0) torch::nn::utils::clip_grad_norm_(parameters_, t_.clip);
    set_learning_rate(*optimizer_, schedule_.lr());
    optimizer_->step();
    ++state_.step;
    schedule_.after_step(state_.step);
    state_.next_batch = b + 1;
    state_.window_loss += r.loss;
    ++state_.window_steps;
    state_.window_tokens += r.tokens;
  }

  /// The live progress line after batch `b` of the epoch.
  void show_progress(int64_t b, int64_t first_batch, double epoch_seconds) {
    const auto done = static_cast<double>(b + 1 - first_batch);
    const double per_batch = epoch_seconds / done;
    const double epoch_eta = per_batch * static_cast<double>(batches_ - b - 1);
    // The whole run: this epoch's rest and the epochs after it (early
    // stopping may end it sooner), at most what --max-time leaves.
    double run_eta = epoch_eta + per_batch * static_cast<double>(batches_ * (t_.epochs - state_.epoch - 1));
    if (t_.max_time > 0) run_eta = std::min(run_eta, std::max(0.0, t_.max_time * 60 - elapsed()));
    const double rate = static_cast<double>(state_.window_tokens) / std::max(1e-9, window_seconds());
    std::ostringstream bar;
    const int width = 20;
    const int filled = static_cast<int>(width * (b + 1) / std::max<int64_t>(1, batches_));
    bar << "epoch " << state_.epoch + 1 << "/" << t_.epochs << " ["
        << std::string(static_cast<size_t>(filled), '#') << std::string(static_cast<size_t>(width - filled), '.')
        << "] " << b + 1 << "/" << batches_ << " step " << state_.step << " loss " << std::fixed
        << std::setprecision(4) << state_.window_loss / static_cast<double>(state_.window_steps) << " "
        << format_rate(rate) << " " << progress_.unit() << "/s lr " << std::scientific << std::setprecision(2)
        << schedule_.lr() << " ETA " << format_duration(run_eta) << " (epoch " << format_duration(epoch_eta) << ")";
    progress_.update(bar.str());
  }

  /// Evaluation, interruption, --max-time and periodic checkpoints after a step.
  void after_step() {
    if (t_.eval_every > 0 && state_.step % t_.eval_every == 0 && evaluate()) {
      finish(StopReason::kEarlyStopping);
    } else if (interrupts_.requested()) {
      interrupt();
    } else if (t_.max_time > 0 && elapsed() >= t_.max_time * 60) {
      if (t_.eval_every == 0 || state_.step % t_.eval_every != 0) evaluate();
      finish(StopReason::kMaxTime);
      progress_.message("stopped after --max-time " + std::to_string(t_.max_time) + " minutes");
    } else if (t_.checkpoint_every > 0 && seconds_since(last_checkpoint_) >= t_.checkpoint_every * 60) {
      save();
    }
  }

  /// Evaluates on dev, keeps the best model, logs; true when early stopping says to stop.
  bool evaluate() {
    state_.window_seconds = window_seconds();
    module_.eval();
    Evaluation e;
    {
      torch::NoGradGuard no_grad;
      e = task_.evaluate();
    }
    module_.train();
    const bool improved = !state_.has_best || (options_.higher_is_better ? e.score > state_.best_score
                                                                         : e.score < state_.best_score);
    if (improved) {
      state_.has_best = true;
      state_.best_score = e.score;
      state_.best_epoch = completed_epochs();
      state_.best_step = state_.step;
      state_.bad_evaluations = 0;
      task_.save_best();
    } else {
      ++state_.bad_evaluations;
    }
    schedule_.after_evaluation(improved);
    log_evaluation(e, improved);
    state_.window_loss = 0;
    state_.window_steps = 0;
    state_.window_tokens = 0;
    state_.window_seconds = 0;
    window_base_ = 0;
    window_start_ = Clock::now();
    return t_.patience > 0 && state_.bad_evaluations >= t_.patience;
  }

  /// The epoch an evaluation belongs to, 1-based (a partial epoch counts).
  int64_t completed_epochs() const { return state_.epoch + (state_.next_batch == 0 ? 0 : 1); }

  /// One train_log.jsonl record and one message line.
  void log_evaluation(const Evaluation& e, bool improved) {
    const double train_loss =
        state_.window_steps ? state_.window_loss / static_cast<double>(state_.window_steps) : 0.0;
    const double rate =
        state_.window_seconds > 0 ? static_cast<double>(state_.window_tokens) / state_.window_seconds : 0.0;
    nlohmann::json record = {
        {"epoch", completed_epochs()},
        {"epoch_fraction", static_cast<double>(state_.epoch) +
                               (batches_ ? static_cast<double>(state_.next_batch) / static_cast<double>(batches_)
                                         : 0.0)},
        {"step", state_.step},
        {"elapsed_s", elapsed()},
        {"train_loss", train_loss},
        {"lr", schedule_.lr()},
        {options_.unit + "_per_s", rate},
        {"dev", e.metrics},
        {"score", e.score},
        {"best", state_.best_score},
        {"improved", improved}};
    record.update(options_.log_fields);
    append_to_file(log_path_, record.dump() + "\n");
    std::ostringstream line;
    line << "epoch " << record["epoch"] << " step " << state_.step << ": train loss " << std::fixed
         << std::setprecision(4) << train_loss << ", dev " << options_.metric << " " << e.score
         << (improved ? " (best, saved)" : " (best " + std::to_string(state_.best_score) + ")") << ", "
         << format_rate(rate) << " " << options_.unit << "/s, " << format_duration(elapsed());
    progress_.message(line.str());
  }

  const TrainerOptions& options_;
  const TrainingOptions& t_;
  TrainTask& task_;
  torch::nn::Module& module_;
  std::vector<torch::Tensor> parameters_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  int64_t batches_;
  int64_t prepared_epoch_ = 0;
  LrSchedule schedule_;
  Progress progress_;
  std::string checkpoint_path_, log_path_;
  RunState state_;
  InterruptGuard interrupts_;
  double window_base_ = 0;       // window seconds before this process
  double elapsed_before_ = 0;    // training seconds before this process
  Clock::time_point started_, window_start_, last_checkpoint_;
  bool stopped_ = false;
  bool already_finished_ = false;
  StopReason stop_reason_ = StopReason::kEpochs;
};

}  // namespace

std::string to_string(StopReason reason) {
  switch (reason) {
    case StopReason::kEpochs: return "epochs";
    case StopReason::kEarlyStopping: return "early-stopping";
    case StopReason::kMaxTime: return "max-time";
    case StopReason::kInterrupted: return "interrupted";
  }
  return "?";
}

TrainerOptions TrainerOptions::of(const TrainingOptions& training, const std::string& model_dir,
                                  const std::string& metric, bool quiet) {
  TrainerOptions t;
  t.training = training;
  t.model_dir = model_dir;
  t.metric = metric;
  t.quiet = quiet;
  return t;
}

Trainer::Trainer(TrainerOptions options) : options_(std::move(options)) {
  options_.training.validate();
  if (options_.model_dir.empty()) throw std::invalid_argument("Trainer: no model directory");
}

TrainResult Trainer::fit(TrainTask& task) {
  std::filesystem::create_directories(options_.model_dir);
  return TrainingRun(options_, task).run();
}

}  // namespace cellstate
