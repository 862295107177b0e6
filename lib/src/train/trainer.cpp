#include "cellstate/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <csignal>
#include <mutex>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <unistd.h>

#include "cellstate/dist/gradient_exchange.h"
#include "cellstate/train/checkpoint.h"
#include "cellstate/train/optimizers.h"
#include "cellstate/train/schedule.h"
#include "cellstate/util/interrupt.h"
#include "cellstate/util/io.h"
#include "cellstate/util/progress.h"
#include "cellstate/util/random.h"
#include "cellstate/util/text.h"

namespace cellstate {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// The parameters training changes (--freeze sets requires_grad false on the others).
std::vector<torch::Tensor> trainable_parameters(const torch::nn::Module& module) {
  std::vector<torch::Tensor> out;
  for (const auto& p : module.parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}

/// One call of Trainer::fit: the loop and the pieces it is made of.
class TrainingRun {
 public:
  TrainingRun(const TrainerOptions& options, const ProcessGroup& group, TrainTask& task)
      : options_(options), t_(options.training), group_(group), task_(task), module_(task.module()),
        parameters_(trainable_parameters(module_)), optimizer_(make_optimizer(parameters_, t_)),
        batches_(task.begin_epoch(0)), schedule_(t_, t_.epochs * batches_),
        progress_(options.quiet || !group.main(), options.unit), checkpoint_path_(options.model_dir + "/" + options.checkpoint_name),
        log_path_(options.model_dir + "/train_log.jsonl") {}

  TrainResult run() {
    start();
    if (already_finished_) {
      stopped_ = true;
      stop_reason_ = finished_reason();
    }
    module_.train();
    if (options_.evaluate_first && !already_finished_ && state_.step == 0 && !state_.has_best && evaluate()) {
      finish(StopReason::kEarlyStopping);
    }
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
    r.signal = stop_reason_ == StopReason::kInterrupted ? interrupt_signal() : 0;
    r.already_finished = already_finished_;
    return r;
  }

 private:
  /// Restores the checkpoint with --resume; otherwise starts the log afresh.
  void start() {
    if (group_.distributed()) join_ranks();
    if (t_.resume) {
      if (group_.distributed()) {
        // Rank 0's checkpoint, on every rank (they may be other machines).
        if (!group_.broadcast_flag(file_exists(checkpoint_path_)))
          throw InputError(checkpoint_path_, 0, "no checkpoint to resume from");
        share_file(group_, checkpoint_path_);
      }
      // The epoch is prepared first, then the task's state restored into it
      // (a language model's hidden state carried across batches).
      const RunState saved = read_run_state(checkpoint_path_);
      if (saved.epoch != 0) {
        batches_ = task_.begin_epoch(saved.epoch);
        prepared_epoch_ = saved.epoch;
      }
      torch::Tensor generators;
      state_ = load_checkpoint(checkpoint_path_, parts(), &generators);
      if (group_.distributed()) restore_rank_generator(generators);
      already_finished_ = finished_reason_of_state();
      progress_.message("resuming from " + checkpoint_path_ + " at epoch " + std::to_string(state_.epoch + 1) +
                        ", batch " + std::to_string(state_.next_batch) + ", step " + std::to_string(state_.step) +
                        (already_finished_ ? " (its training had ended: " + to_string(finished_reason()) + ")" : ""));
    } else if (!options_.append_log && group_.main()) {
      atomic_write(log_path_, "");
    }
    window_base_ = state_.window_seconds;
    elapsed_before_ = state_.elapsed;
    window_start_ = started_ = last_checkpoint_ = Clock::now();
  }

  /// A data-parallel start: the ranks must hold the same model (checked),
  /// start from rank 0's weights, and draw their dropout masks from their own
  /// generators (rank 0 keeps the one --seed started, so one rank is the
  /// one-process run).
  void join_ranks() {
    int64_t numel = 0;
    for (const auto& p : parameters_) numel += p.numel();
    const auto mine = torch::tensor({static_cast<int64_t>(parameters_.size()), numel}, torch::kInt64);
    const auto all = group_.all_gather(mine);
    for (int64_t r = 0; r < group_.size(); ++r)
      if (!all[static_cast<size_t>(r)].equal(all[0]))
        throw std::runtime_error(group_.name() + ": rank " + std::to_string(r) + "'s model has " +
                                 std::to_string(all[static_cast<size_t>(r)][1].item<int64_t>()) + " parameters in " +
                                 std::to_string(all[static_cast<size_t>(r)][0].item<int64_t>()) + " tensors, rank 0's " +
                                 std::to_string(all[0][1].item<int64_t>()) + " in " +
                                 std::to_string(all[0][0].item<int64_t>()) + " (were the ranks given different options?)");
    torch::NoGradGuard no_grad;
    for (auto& t : module_.parameters()) {
      auto c = t.detach().contiguous();
      group_.broadcast(c);
      t.detach().copy_(c);
    }
    for (auto& t : module_.buffers()) {  // Gloo has no bool: masks travel as bytes
      auto c = t.scalar_type() == torch::kBool ? t.to(torch::kUInt8) : t.contiguous();
      group_.broadcast(c);
      t.copy_(c);
    }
    if (!group_.main()) torch::manual_seed(derive_seed(t_.seed, 0x7261'6e6b'0000'0000ULL + static_cast<uint64_t>(group_.rank())));
  }

  /// After loading a data-parallel checkpoint: this rank's generator as it
  /// was, when the checkpoint holds it; otherwise (a different number of
  /// ranks, or a one-process checkpoint) one derived from the seed, rank and step.
  void restore_rank_generator(const torch::Tensor& generators) {
    if (generators.defined() && generators.dim() == 2 && generators.size(0) > group_.rank()) {
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(generators[group_.rank()].clone());
    } else if (!group_.main()) {
      torch::manual_seed(derive_seed(derive_seed(t_.seed, static_cast<uint64_t>(state_.step)),
                                     0x7261'6e6b'0000'0000ULL + static_cast<uint64_t>(group_.rank())));
    }
  }

  /// Every rank's generator state, one row each (data-parallel checkpoints).
  torch::Tensor rank_generators() const {
    if (!group_.distributed()) return {};
    torch::Tensor mine;
    {
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      mine = generator.get_state();
    }
    return torch::stack(group_.all_gather(mine));
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

  CheckpointParts parts() { return {module_, *optimizer_, schedule_, task_, average_}; }

  /// NT-ASGD (Merity et al. 2017): after an evaluation, whether dev is worse
  /// than the best of the evaluations before the last t_.nt_asgd; then the
  /// weights are averaged from now on.
  void maybe_start_averaging(double score) {
    const auto& scores = state_.scores;  // this evaluation's not yet among them
    const auto n = static_cast<size_t>(t_.nt_asgd);
    if (t_.nt_asgd == 0 || state_.averaging || scores.size() <= n) return;
    const auto before = scores.begin() + static_cast<std::ptrdiff_t>(scores.size() - n);
    const double best = options_.higher_is_better ? *std::max_element(scores.begin(), before)
                                                  : *std::min_element(scores.begin(), before);
    if (options_.higher_is_better ? score >= best : score <= best) return;
    torch::NoGradGuard no_grad;
    average_.clear();
    for (const auto& p : parameters_) average_.push_back(p.detach().clone());
    state_.averaging = true;
    state_.averaged_steps = 1;
    state_.bad_evaluations = 0;  // the patience counts again for the averaged weights
    progress_.message("dev " + options_.metric + " " + format_fixed(score, 4) + " is worse than " +
                      format_fixed(best, 4) + ", the best before the last " + std::to_string(t_.nt_asgd) +
                      " evaluations: averaging the weights from step " + std::to_string(state_.step) + " (NT-ASGD)");
  }

  /// Adds the weights after a step to the running average.
  void update_average() {
    torch::NoGradGuard no_grad;
    ++state_.averaged_steps;
    const double w = 1.0 / static_cast<double>(state_.averaged_steps);
    for (size_t i = 0; i < average_.size(); ++i) average_[i].lerp_(parameters_[i].detach(), w);
  }

  /// Exchanges the module's trainable weights with the average (twice: back).
  void swap_average() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < average_.size(); ++i) {
      auto kept = parameters_[i].detach().clone();
      parameters_[i].detach().copy_(average_[i]);
      average_[i].copy_(kept);
    }
  }

  /// Seconds trained, this process and the ones before it.
  double elapsed() const { return elapsed_before_ + seconds_since(started_); }
  double window_seconds() const { return window_base_ + seconds_since(window_start_); }

  /// On every rank (the task's state and the generators are gathered); rank 0 writes.
  void save() {
    state_.elapsed = elapsed();
    state_.window_seconds = window_seconds();
    const auto generators = rank_generators();
    const std::string bytes = checkpoint_bytes(parts(), state_, generators);
    if (group_.main()) atomic_write(checkpoint_path_, bytes);
    last_checkpoint_ = Clock::now();
  }

  void finish(StopReason reason) {
    save();
    stop_reason_ = reason;
    stopped_ = true;
  }

  void interrupt() {
    finish(StopReason::kInterrupted);
    progress_.message("interrupted by " + Interrupted::name(interrupt_signal()) + ": checkpoint written to " +
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
      if (!group_.distributed() && interrupts_.requested()) {  // a signal before this step (during start-up or an evaluation)
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
    StepResult r = task_.train_step(b);
    if (group_.distributed()) exchange(r);
    else if (r.objective.defined()) r.objective.backward();
    if (!std::isfinite(r.loss))
      throw std::runtime_error("the training loss became " + std::to_string(r.loss) + " at step " +
                               std::to_string(state_.step + 1) + " (try a lower --lr or a --clip)");
    if (t_.clip > 0) clip_gradient_norm(parameters_, t_.clip);
    set_learning_rate(*optimizer_, schedule_.lr());
    optimizer_->step();
    if (state_.averaging) update_average();
    ++state_.step;
    schedule_.after_step(state_.step);
    state_.next_batch = b + 1;
    state_.window_loss += r.loss;
    ++state_.window_steps;
    state_.window_tokens += r.tokens;
  }

  /// A data-parallel step's backward pass and exchange: gradients, loss and
  /// tokens summed (each rank's loss is its share of the batch's mean), and
  /// the stop signals, so that every rank decides alike after this step.
  void exchange(StepResult& r) {
    if (!exchange_) {  // after the start (the Reducer hooks the restored parameters)
      GradientExchangeOptions o;
      o.bucket_mb = t_.dist_bucket_mb;
      exchange_ = std::make_unique<GradientExchange>(group_, parameters_, o);
    }
    // This rank's signal, read once: one that arrives during the exchange
    // counts at the next step on every rank alike, never here alone.
    const int own = interrupts_.requested() ? interrupts_.signal() : 0;
    std::vector<double> scalars = {r.loss, static_cast<double>(r.tokens),
                                   own == SIGTERM ? 1.0 : 0.0,
                                   own != 0 && own != SIGTERM ? 1.0 : 0.0,
                                   group_.main() && past_max_time() ? 1.0 : 0.0,
                                   group_.main() && clock_checkpoint_due() ? 1.0 : 0.0};
    exchange_->backward(r.objective, scalars);
    r.loss = scalars[0];
    r.tokens = static_cast<int64_t>(std::llround(scalars[1]));
    // The signal: this rank's own if it had one, else one another rank had
    // (whether to stop depends on the sums alone, the same on every rank).
    shared_.signal = own ? own : scalars[2] > 0 ? SIGTERM : scalars[3] > 0 ? SIGINT : 0;
    shared_.out_of_time = scalars[4] > 0;
    shared_.checkpoint_due = scalars[5] > 0;
  }

  /// This process's clocks (in a data-parallel run, rank 0's decide).
  bool past_max_time() const { return t_.max_time > 0 && elapsed() >= t_.max_time * 60; }
  bool clock_checkpoint_due() const {
    return t_.checkpoint_every > 0 && seconds_since(last_checkpoint_) >= t_.checkpoint_every * 60;
  }

  bool interrupt_requested() const { return group_.distributed() ? shared_.signal != 0 : interrupts_.requested(); }
  int interrupt_signal() const { return group_.distributed() ? shared_.signal : interrupts_.signal(); }
  bool out_of_time() const {
    return group_.distributed() ? shared_.out_of_time : past_max_time();
  }
  bool checkpoint_due() const {
    return group_.distributed() ? shared_.checkpoint_due : clock_checkpoint_due();
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
    } else if (interrupt_requested()) {
      interrupt();
    } else if (out_of_time()) {
      if (t_.eval_every == 0 || state_.step % t_.eval_every != 0) evaluate();
      finish(StopReason::kMaxTime);
      progress_.message("stopped after --max-time " + std::to_string(t_.max_time) + " minutes");
    } else if (checkpoint_due()) {
      save();
    }
  }

  /// Evaluates on dev, keeps the best model, logs; true when early stopping says to stop.
  bool evaluate() {
    state_.window_seconds = window_seconds();
    // While averaging, the average is evaluated (and saved when best).
    const bool averaged = state_.averaging && !average_.empty();
    if (averaged) swap_average();
    Evaluation e;
    if (group_.main()) {  // rank 0 alone evaluates; the others wait for its score
      module_.eval();
      torch::NoGradGuard no_grad;
      e = task_.evaluate();
      module_.train();
    }
    if (group_.distributed()) {
      auto score = torch::tensor({e.score}, torch::kFloat64);
      group_.broadcast(score);
      e.score = score.item<double>();
    }
    const bool improved = !state_.has_best || (options_.higher_is_better ? e.score > state_.best_score
                                                                         : e.score < state_.best_score);
    if (improved) {
      state_.has_best = true;
      state_.best_score = e.score;
      state_.best_epoch = completed_epochs();
      state_.best_step = state_.step;
      state_.bad_evaluations = 0;
      if (group_.main()) task_.save_best();
    } else {
      ++state_.bad_evaluations;
    }
    if (averaged) swap_average();
    schedule_.after_evaluation(improved);
    if (group_.main()) log_evaluation(e, improved);
    maybe_start_averaging(e.score);
    state_.scores.push_back(e.score);
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
        {"step_ms", state_.window_steps ? 1000 * state_.window_seconds / static_cast<double>(state_.window_steps) : 0.0},
        {"dev", e.metrics},
        {"score", e.score},
        {"best", state_.best_score},
        {"improved", improved}};
    if (state_.averaging) record["averaged_steps"] = state_.averaged_steps;
    if (group_.distributed()) {
      record["ranks"] = group_.size();
      const double calls = exchange_ ? static_cast<double>(exchange_->calls()) : 0.0;
      record["exchange_ms_per_step"] = calls > 0 ? 1000 * exchange_->seconds() / calls : 0.0;
      record["backward_ms_per_step"] = calls > 0 ? 1000 * exchange_->backward_seconds() / calls : 0.0;
    }
    record.update(options_.log_fields);
    append_to_file(log_path_, record.dump() + "\n");
    std::ostringstream line;
    if (state_.step == 0) {
      line << "before training: dev " << options_.metric << " " << std::fixed << std::setprecision(4) << e.score
           << " (saved)";
      progress_.message(line.str());
      return;
    }
    line << "epoch " << record["epoch"] << " step " << state_.step << ": train loss " << std::fixed
         << std::setprecision(4) << train_loss << ", dev " << options_.metric << " " << e.score
         << (improved ? " (best, saved)" : " (best " + std::to_string(state_.best_score) + ")") << ", "
         << format_rate(rate) << " " << options_.unit << "/s, " << format_duration(elapsed());
    progress_.message(line.str());
  }

  /// The stop signals as the last exchange shared them (data-parallel runs).
  struct SharedSignals {
    int signal = 0;
    bool out_of_time = false;
    bool checkpoint_due = false;
  };

  const TrainerOptions& options_;
  const TrainingOptions& t_;
  const ProcessGroup& group_;
  std::unique_ptr<GradientExchange> exchange_;  // data-parallel runs, from the first step
  SharedSignals shared_;
  TrainTask& task_;
  torch::nn::Module& module_;
  std::vector<torch::Tensor> parameters_;
  std::vector<torch::Tensor> average_;  // NT-ASGD's running average of parameters_
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
  t.evaluate_first = !training.init_from.empty();
  return t;
}

Trainer::Trainer(TrainerOptions options, ProcessGroup group) : options_(std::move(options)), group_(std::move(group)) {
  options_.training.validate();
  if (options_.model_dir.empty()) throw std::invalid_argument("Trainer: no model directory");
}

TrainResult Trainer::fit(TrainTask& task) {
  std::filesystem::create_directories(options_.model_dir);
  return TrainingRun(options_, group_, task).run();
}

}  // namespace cellstate
