#include "cellstate/train/schedule.h"

#include "cellstate/train/optimizers.h"

#include <torch/optim.h>
#include <torch/serialize.h>

#include <algorithm>

namespace cellstate {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const TrainingOptions& o) {
  switch (o.optimizer) {
    case OptimizerKind::kAdam:
      return std::make_unique<FusedAdam>(parameters, torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
    case OptimizerKind::kAdamW:
      return std::make_unique<FusedAdamW>(parameters, torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
    case OptimizerKind::kSGD:
      return std::make_unique<torch::optim::SGD>(
          parameters, torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
  }
  throw std::invalid_argument("make_optimizer: unknown optimizer");
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

LrSchedule::LrSchedule(const TrainingOptions& options, int64_t total_steps)
    : options_(options), total_steps_(total_steps), lr_(options.lr) {
  after_step(0);
}

void LrSchedule::after_step(int64_t step) {
  if (options_.lr_schedule != LrScheduleKind::kWarmupLinear) return;
  const auto next = static_cast<double>(step + 1);
  const auto warmup = static_cast<double>(options_.warmup);
  const auto total = static_cast<double>(std::max<int64_t>(total_steps_, options_.warmup + 1));
  if (next <= warmup)
    lr_ = options_.lr * next / warmup;
  else
    lr_ = options_.lr * std::max(0.0, (total - next + 1) / (total - warmup));
}

void LrSchedule::after_epoch(int64_t epoch) {
  if (options_.lr_schedule == LrScheduleKind::kStep && epoch % options_.lr_step == 0)
    lr_ = std::max(options_.min_lr, lr_ * options_.lr_decay);
}

void LrSchedule::after_evaluation(bool improved) {
  if (options_.lr_schedule != LrScheduleKind::kPlateau) return;
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

}  // namespace cellstate
