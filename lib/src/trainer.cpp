#include "cellstate/trainer.h"

#include "cellstate/io.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim.h>
#include <torch/serialize.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <sstream>

#include <unistd.h>

namespace cellstate {

namespace {

// A signal handler can only reach static storage; this flag is the one
// piece of it, set by SIGINT/SIGTERM while an InterruptGuard is alive.
std::atomic<int> interrupt_count{0};

extern "C" void on_interrupt(int) {
  // A second interrupt means "now": leave without the checkpoint.
  if (interrupt_count.fetch_add(1) >= 1) _exit(130);
}

/// Installs the SIGINT/SIGTERM handler for its lifetime, restoring the
/// previous handlers after.
class InterruptGuard {
 public:
  InterruptGuard() {
    interrupt_count = 0;
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  bool requested() const { return interrupt_count.load() > 0; }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto total = static_cast<int64_t>(s + 0.5);
  std::ostringstream out;
  if (total >= 3600) out << total / 3600 << ":" << std::setw(2) << std::setfill('0') << (total / 60) % 60;
  else out << total / 60;
  out << ":" << std::setw(2) << std::setfill('0') << total % 60;
  return out.str();
}

std::string format_rate(double r) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(r >= 1e4 ? 0 : 1);
  if (r >= 1e6) out << r / 1e6 << "M";
  else if (r >= 1e4) out << r / 1e3 << "k";
  else out << r;
  return out.str();
}

/// Progress on stderr: a live line on a terminal, a plain line every 30 s
/// otherwise, nothing when quiet.
class Progress {
 public:
  Progress(bool quiet, std::string unit)
      : quiet_(quiet), tty_(isatty(STDERR_FILENO) != 0), unit_(std::move(unit)),
        last_(Clock::now()) {}

  void update(const std::string& text) {
    if (quiet_) return;
    const double since = seconds_since(last_);
    if (tty_) {
      if (since < 0.1) return;
      std::cerr << "\r\033[K" << text << std::flush;
      shown_ = true;
    } else {
      if (since < 30) return;
      std::cerr << text << "\n" << std::flush;
    }
    last_ = Clock::now();
  }

  void message(const std::string& text) {
    if (quiet_) return;
    if (tty_ && shown_) std::cerr << "\r\033[K";
    shown_ = false;
    std::cerr << text << "\n" << std::flush;
    last_ = Clock::now();  // the next plain progress line comes a period later
  }

  const std::string& unit() const { return unit_; }

 private:
  bool quiet_;
  bool tty_;
  bool shown_ = false;
  std::string unit_;
  Clock::time_point last_;
};

/// Everything about the run's position that a checkpoint must restore.
struct RunState {
  int64_t epoch = 0;        // current epoch, 0-based
  int64_t next_batch = 0;   // next batch of the current epoch
  int64_t step = 0;         // optimisation steps done
  int64_t best_epoch = 0;
  int64_t best_step = 0;
  int64_t bad_evaluations = 0;
  int64_t has_best = 0;
  int64_t window_steps = 0;   // steps since the last evaluation
  int64_t window_tokens = 0;
  double best_score = 0;
  double elapsed = 0;         // seconds of training before this process
  double window_loss = 0;     // sum of step losses since the last evaluation
  double window_seconds = 0;

  torch::Tensor ints() const {
    return torch::tensor({epoch, next_batch, step, best_epoch, best_step, bad_evaluations, has_best,
                          window_steps, window_tokens},
                         torch::kInt64);
  }
  torch::Tensor doubles() const {
    return torch::tensor({best_score, elapsed, window_loss, window_seconds}, torch::kDouble);
  }
  void set(const torch::Tensor& i, const torch::Tensor& d) {
    TORCH_CHECK(i.numel() == 9 && d.numel() == 4, "checkpoint state of an unexpected size");
    const auto* p = i.data_ptr<int64_t>();
    epoch = p[0], next_batch = p[1], step = p[2], best_epoch = p[3], best_step = p[4];
    bad_evaluations = p[5], has_best = p[6], window_steps = p[7], window_tokens = p[8];
    const auto* q = d.data_ptr<double>();
    best_score = q[0], elapsed = q[1], window_loss = q[2], window_seconds = q[3];
  }
};

void set_lr(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const TrainingOptions& o) {
  if (o.optimizer == "adam")
    return std::make_unique<torch::optim::Adam>(
        parameters, torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
  if (o.optimizer == "adamw")
    return std::make_unique<torch::optim::AdamW>(
        parameters, torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  if (o.optimizer == "sgd")
    return std::make_unique<torch::optim::SGD>(
        parameters, torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
  throw std::invalid_argument("--optimizer must be adam, adamw or sgd, got '" + o.optimizer + "'");
}

LrSchedule::LrSchedule(const TrainingOptions& options, int64_t total_steps)
    : options_(options), total_steps_(total_steps), lr_(options.lr) {
  after_step(0);
}

void LrSchedule::after_step(int64_t step) {
  if (options_.lr_schedule != "warmup-linear") return;
  const auto next = static_cast<double>(step + 1);
  const auto warmup = static_cast<double>(options_.warmup);
  const auto total = static_cast<double>(std::max<int64_t>(total_steps_, options_.warmup + 1));
  if (next <= warmup)
    lr_ = options_.lr * next / warmup;
  else
    lr_ = options_.lr * std::max(0.0, (total - next + 1) / (total - warmup));
}

void LrSchedule::after_epoch(int64_t epoch) {
  if (options_.lr_schedule == "step" && epoch % options_.lr_step == 0)
    lr_ = std::max(options_.min_lr, lr_ * options_.lr_decay);
}

void LrSchedule::after_evaluation(bool improved) {
  if (options_.lr_schedule != "plateau") return;
  if (improved) {
    bad_evaluations_ = 0;
    return;
  }
  if (++bad_evaluations_ >= options_.lr_step) {
    lr_ = std::max(options_.min_lr, lr_ * options_.lr_decay);
    bad_evaluations_ = 0;
  }
}

void LrSchedule::save(torch::serialize::OutputArchive& archive) const {
  archive.write("lr", torch::tensor({lr_}, torch::kDouble));
  archive.write("counters", torch::tensor({total_steps_, bad_evaluations_}, torch::kInt64));
}

void LrSchedule::load(torch::serialize::InputArchive& archive) {
  torch::Tensor lr, counters;
  archive.read("lr", lr);
  archive.read("counters", counters);
  lr_ = lr.item<double>();
  total_steps_ = counters[0].item<int64_t>();
  bad_evaluations_ = counters[1].item<int64_t>();
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
  const TrainingOptions& t = options_.training;
  const std::string dir = options_.model_dir;
  std::filesystem::create_directories(dir);
  const std::string checkpoint_path = dir + "/" + options_.checkpoint_name;
  const std::string log_path = dir + "/train_log.jsonl";

  auto& module = task.module();
  auto parameters = module.parameters();
  auto optimizer = make_optimizer(parameters, t);
  RunState st;
  int64_t batches = task.begin_epoch(0);
  int64_t prepared_epoch = 0;
  LrSchedule schedule(t, t.epochs * batches);
  Progress progress(options_.quiet, options_.unit);

  if (t.resume) {
    if (!file_exists(checkpoint_path))
      throw InputError(checkpoint_path, 0, "no checkpoint to resume from");
    torch::serialize::InputArchive root, model, opt, sched, task_state;
    try {
      root.load_from(checkpoint_path);
      root.read("model", model);
      root.read("optimizer", opt);
      root.read("schedule", sched);
      root.read("task", task_state);
      module.load(model);
      optimizer->load(opt);
      schedule.load(sched);
      torch::Tensor ints, doubles, rng;
      root.read("state_i", ints);
      root.read("state_f", doubles);
      root.read("rng", rng);
      st.set(ints, doubles);
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(rng);
    } catch (const c10::Error& e) {
      throw InputError(checkpoint_path, 0,
                       "cannot resume: the checkpoint does not match this model and options (" +
                           std::string(e.what_without_backtrace()).substr(0, 160) + ")");
    }
    task.load_state(task_state);
    if (st.epoch != 0) {
      batches = task.begin_epoch(st.epoch);
      prepared_epoch = st.epoch;
    }
    progress.message("resuming from " + checkpoint_path + " at epoch " + std::to_string(st.epoch + 1) +
                     ", batch " + std::to_string(st.next_batch) + ", step " + std::to_string(st.step));
  } else if (!options_.append_log) {
    atomic_write(log_path, "");
  }

  double window_base = st.window_seconds;
  auto window_start = Clock::now();
  const auto started = Clock::now();
  const double elapsed_before = st.elapsed;  // seconds trained before this process
  auto elapsed = [&] { return elapsed_before + seconds_since(started); };
  auto last_checkpoint = Clock::now();

  auto save_checkpoint = [&] {
    st.elapsed = elapsed();
    st.window_seconds = window_base + seconds_since(window_start);
    torch::serialize::OutputArchive root, model, opt, sched, task_state;
    module.save(model);
    optimizer->save(opt);
    schedule.save(sched);
    task.save_state(task_state);
    root.write("model", model);
    root.write("optimizer", opt);
    root.write("schedule", sched);
    root.write("task", task_state);
    root.write("state_i", st.ints());
    root.write("state_f", st.doubles());
    auto generator = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      root.write("rng", generator.get_state());
    }
    atomic_write_with(checkpoint_path, [&](const std::string& tmp) { root.save_to(tmp); });
    last_checkpoint = Clock::now();
  };

  InterruptGuard interrupts;
  TrainResult result;
  result.stop_reason = "epochs";

  // Returns true when early stopping says to stop.
  auto evaluate = [&]() -> bool {
    st.window_seconds = window_base + seconds_since(window_start);
    module.eval();
    Evaluation e;
    {
      torch::NoGradGuard no_grad;
      e = task.evaluate();
    }
    module.train();
    const bool improved = !st.has_best || (options_.higher_is_better ? e.score > st.best_score
                                                                      : e.score < st.best_score);
    if (improved) {
      st.has_best = 1;
      st.best_score = e.score;
      st.best_epoch = st.epoch + (st.next_batch == 0 ? 0 : 1);
      st.best_step = st.step;
      st.bad_evaluations = 0;
      task.save_best();
    } else {
      ++st.bad_evaluations;
    }
    schedule.after_evaluation(improved);
    const double train_loss = st.window_steps ? st.window_loss / static_cast<double>(st.window_steps) : 0.0;
    const double rate = st.window_seconds > 0 ? static_cast<double>(st.window_tokens) / st.window_seconds : 0.0;
    nlohmann::json record = {
        {"epoch", st.epoch + (st.next_batch == 0 ? 0 : 1)},
        {"epoch_fraction", static_cast<double>(st.epoch) +
                               (batches ? static_cast<double>(st.next_batch) / static_cast<double>(batches) : 0.0)},
        {"step", st.step},
        {"elapsed_s", elapsed()},
        {"train_loss", train_loss},
        {"lr", schedule.lr()},
        {options_.unit + "_per_s", rate},
        {"dev", e.metrics},
        {"score", e.score},
        {"best", st.best_score},
        {"improved", improved}};
    record.update(options_.log_fields);
    {
      std::ofstream log(log_path, std::ios::app);
      log << record.dump() << "\n";
    }
    std::ostringstream line;
    line << "epoch " << record["epoch"] << " step " << st.step << ": train loss " << std::fixed
         << std::setprecision(4) << train_loss << ", dev " << options_.metric << " " << e.score
         << (improved ? " (best, saved)" : " (best " + std::to_string(st.best_score) + ")") << ", "
         << format_rate(rate) << " " << options_.unit << "/s, " << format_duration(elapsed());
    progress.message(line.str());
    st.window_loss = 0;
    st.window_steps = 0;
    st.window_tokens = 0;
    st.window_seconds = 0;
    window_base = 0;
    window_start = Clock::now();
    return t.patience > 0 && st.bad_evaluations >= t.patience;
  };

  auto finish = [&](const std::string& reason) {
    save_checkpoint();
    result.stop_reason = reason;
  };

  module.train();
  bool stop = false;
  while (!stop && st.epoch < t.epochs) {
    if (prepared_epoch != st.epoch) {
      batches = task.begin_epoch(st.epoch);
      prepared_epoch = st.epoch;
    }
    const auto epoch_start = Clock::now();
    const int64_t first_batch = st.next_batch;
    for (int64_t b = st.next_batch; b < batches && !stop; ++b) {
      optimizer->zero_grad();
      const StepResult r = task.train_step(b);
      if (!std::isfinite(r.loss))
        throw std::runtime_error("the training loss became " + std::to_string(r.loss) + " at step " +
                                 std::to_string(st.step + 1) + " (try a lower --lr or a --clip)");
      if (t.clip > 0) torch::nn::utils::clip_grad_norm_(parameters, t.clip);
      set_lr(*optimizer, schedule.lr());
      optimizer->step();
      ++st.step;
      schedule.after_step(st.step);
      st.next_batch = b + 1;
      st.window_loss += r.loss;
      ++st.window_steps;
      st.window_tokens += r.tokens;

      const double epoch_s = seconds_since(epoch_start);
      const auto done = static_cast<double>(b + 1 - first_batch);
      const double eta = epoch_s / done * static_cast<double>(batches - b - 1);
      const double rate = static_cast<double>(st.window_tokens) /
                          std::max(1e-9, window_base + seconds_since(window_start));
      std::ostringstream bar;
      const int width = 20;
      const int filled = static_cast<int>(width * (b + 1) / std::max<int64_t>(1, batches));
      bar << "epoch " << st.epoch + 1 << "/" << t.epochs << " [" << std::string(static_cast<size_t>(filled), '#')
          << std::string(static_cast<size_t>(width - filled), '.') << "] " << b + 1 << "/" << batches
          << " step " << st.step << " loss " << std::fixed << std::setprecision(4)
          << st.window_loss / static_cast<double>(st.window_steps) << " " << format_rate(rate) << " "
          << progress.unit() << "/s lr " << std::scientific << std::setprecision(2) << schedule.lr()
          << " ETA " << format_duration(eta);
      progress.update(bar.str());

      if (t.eval_every > 0 && st.step % t.eval_every == 0 && evaluate()) {
        finish("early-stopping");
        stop = true;
        break;
      }
      if (interrupts.requested()) {
        finish("interrupted");
        progress.message("interrupted: checkpoint written to " + checkpoint_path +
                         " (continue with --resume)");
        stop = true;
        break;
      }
      if (t.max_time > 0 && elapsed() >= t.max_time * 60) {
        if (t.eval_every == 0 || st.step % t.eval_every != 0) evaluate();
        finish("max-time");
        progress.message("stopped after --max-time " + std::to_string(t.max_time) + " minutes");
        stop = true;
        break;
      }
      if (t.checkpoint_every > 0 && seconds_since(last_checkpoint) >= t.checkpoint_every * 60) {
        save_checkpoint();
      }
    }
    if (stop) break;
    ++st.epoch;
    st.next_batch = 0;
    schedule.after_epoch(st.epoch);
    if (t.eval_every == 0 && evaluate()) {
      finish("early-stopping");
      break;
    }
    save_checkpoint();
  }
  result.best_score = st.best_score;
  result.best_epoch = st.best_epoch;
  result.best_step = st.best_step;
  result.steps = st.step;
  result.seconds = elapsed();
  return result;
}

}  // namespace cellstate
