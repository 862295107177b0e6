#include "cellstate/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize.h>

#include <mutex>

#include "cellstate/util/io.h"

namespace cellstate {

namespace {

torch::Tensor integers(const RunState& s) {
  return torch::tensor({s.epoch, s.next_batch, s.step, s.best_epoch, s.best_step, s.bad_evaluations,
                        static_cast<int64_t>(s.has_best), s.window_steps, s.window_tokens},
                       torch::kInt64);
}

torch::Tensor reals(const RunState& s) {
  return torch::tensor({s.best_score, s.elapsed, s.window_loss, s.window_seconds}, torch::kDouble);
}

RunState run_state_of(const torch::Tensor& i, const torch::Tensor& d) {
  TORCH_CHECK(i.numel() == 9 && d.numel() == 4, "checkpoint state of an unexpected size");
  RunState s;
  const auto* p = i.data_ptr<int64_t>();
  s.epoch = p[0], s.next_batch = p[1], s.step = p[2], s.best_epoch = p[3], s.best_step = p[4];
  s.bad_evaluations = p[5], s.has_best = p[6] != 0, s.window_steps = p[7], s.window_tokens = p[8];
  const auto* q = d.data_ptr<double>();
  s.best_score = q[0], s.elapsed = q[1], s.window_loss = q[2], s.window_seconds = q[3];
  return s;
}

}  // namespace

void save_checkpoint(const std::string& path, const CheckpointParts& parts, const RunState& state,
                     const torch::Tensor& rank_generators) {
  atomic_write(path, checkpoint_bytes(parts, state, rank_generators));
}

std::string checkpoint_bytes(const CheckpointParts& parts, const RunState& state, const torch::Tensor& rank_generators) {
  torch::serialize::OutputArchive root, model, opt, sched, task_state;
  parts.module.save(model);
  parts.optimizer.save(opt);
  parts.schedule.save(sched);
  parts.task.save_state(task_state);
  root.write("model", model);
  root.write("optimizer", opt);
  root.write("schedule", sched);
  root.write("task", task_state);
  root.write("state_i", integers(state));
  root.write("state_f", reals(state));
  root.write("scores", torch::tensor(state.scores, torch::kDouble));
  root.write("averaging", torch::tensor({static_cast<int64_t>(state.averaging), state.averaged_steps}, torch::kInt64));
  torch::serialize::OutputArchive average;
  for (size_t i = 0; i < parts.average.size(); ++i) average.write(std::to_string(i), parts.average[i]);
  root.write("average", average);
  auto generator = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    root.write("rng", generator.get_state());
  }
  if (rank_generators.defined()) root.write("rng_ranks", rank_generators);
  // Serialised in memory, then written with every error checked: a full
  // disk is a WriteError, never a half-written archive or an abort.
  std::string bytes;
  root.save_to([&bytes](const void* data, size_t n) {
    bytes.append(static_cast<const char*>(data), n);
    return n;
  });
  return bytes;
}

RunState read_run_state(const std::string& path) {
  if (!file_exists(path)) throw InputError(path, 0, "no checkpoint to resume from");
  try {
    torch::serialize::InputArchive root;
    root.load_from(path);
    torch::Tensor ints, doubles;
    root.read("state_i", ints);
    root.read("state_f", doubles);
    return run_state_of(ints, doubles);
  } catch (const c10::Error& e) {
    throw InputError(path, 0, "not a readable checkpoint (" + std::string(e.what_without_backtrace()).substr(0, 160) +
                                  ")");
  }
}

RunState load_checkpoint(const std::string& path, const CheckpointParts& parts, torch::Tensor* rank_generators) {
  if (!file_exists(path)) throw InputError(path, 0, "no checkpoint to resume from");
  torch::serialize::InputArchive root, model, opt, sched, task_state;
  RunState state;
  try {
    root.load_from(path);
    root.read("model", model);
    root.read("optimizer", opt);
    root.read("schedule", sched);
    root.read("task", task_state);
    parts.module.load(model);
    parts.optimizer.load(opt);
    parts.schedule.load(sched);
    torch::Tensor ints, doubles, rng;
    root.read("state_i", ints);
    root.read("state_f", doubles);
    root.read("rng", rng);
    state = run_state_of(ints, doubles);
    // Checkpoints written before NT-ASGD existed have none of these.
    torch::Tensor scores, averaging;
    if (root.try_read("scores", scores)) {
      const auto s = scores.to(torch::kDouble).contiguous();
      state.scores.assign(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
    }
    if (root.try_read("averaging", averaging)) {
      TORCH_CHECK(averaging.numel() == 2, "checkpoint averaging state of an unexpected size");
      state.averaging = averaging[0].item<int64_t>() != 0;
      state.averaged_steps = averaging[1].item<int64_t>();
    }
    parts.average.clear();
    torch::serialize::InputArchive average;
    if (state.averaging) {
      root.read("average", average);
      for (size_t i = 0;; ++i) {
        torch::Tensor t;
        if (!average.try_read(std::to_string(i), t)) break;
        parts.average.push_back(t);
      }
    }
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng);
    if (rank_generators) {
      torch::Tensor ranks;
      *rank_generators = root.try_read("rng_ranks", ranks) ? ranks : torch::Tensor();
    }
  } catch (const c10::Error& e) {
    throw InputError(path, 0,
                     "cannot resume: the checkpoint does not match this model and options (" +
                         std::string(e.what_without_backtrace()).substr(0, 160) + ")");
  }
  parts.task.load_state(task_state);
  return state;
}

}  // namespace cellstate
