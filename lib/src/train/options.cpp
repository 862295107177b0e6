#include "cellstate/train/options.h"

#include <stdexcept>

namespace cellstate {

OptimizerKind parse_optimizer(const std::string& name) {
  if (name == "adam") return OptimizerKind::kAdam;
  if (name == "adamw") return OptimizerKind::kAdamW;
  if (name == "sgd") return OptimizerKind::kSGD;
  throw std::invalid_argument("--optimizer must be adam, adamw or sgd, got '" + name + "'");
}

std::string to_string(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kAdam: return "adam";
    case OptimizerKind::kAdamW: return "adamw";
    case OptimizerKind::kSGD: return "sgd";
  }
  return "?";
}

LrScheduleKind parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrScheduleKind::kConstant;
  if (name == "step") return LrScheduleKind::kStep;
  if (name == "plateau") return LrScheduleKind::kPlateau;
  if (name == "warmup-linear") return LrScheduleKind::kWarmupLinear;
  throw std::invalid_argument("--lr-schedule must be constant, step, plateau or warmup-linear, got '" + name + "'");
}

std::string to_string(LrScheduleKind kind) {
  switch (kind) {
    case LrScheduleKind::kConstant: return "constant";
    case LrScheduleKind::kStep: return "step";
    case LrScheduleKind::kPlateau: return "plateau";
    case LrScheduleKind::kWarmupLinear: return "warmup-linear";
  }
  return "?";
}

void TrainingOptions::validate() const {
  auto positive = [](const char* name, double v) {
    if (!(v > 0)) throw std::invalid_argument(std::string("--") + name + " must be > 0, got " + std::to_string(v));
  };
  auto non_negative = [](const char* name, double v) {
    if (!(v >= 0)) throw std::invalid_argument(std::string("--") + name + " must be >= 0, got " + std::to_string(v));
  };
  positive("epochs", static_cast<double>(epochs));
  positive("batch-size", static_cast<double>(batch_size));
  positive("lr", lr);
  non_negative("weight-decay", weight_decay);
  non_negative("momentum", momentum);
  non_negative("clip", clip);
  non_negative("warmup", static_cast<double>(warmup));
  non_negative("min-lr", min_lr);
  non_negative("patience", static_cast<double>(patience));
  non_negative("eval-every", static_cast<double>(eval_every));
  non_negative("nt-asgd", static_cast<double>(nt_asgd));
  non_negative("max-time", max_time);
  non_negative("checkpoint-every", checkpoint_every);
  positive("lr-step", static_cast<double>(lr_step));
  if (nproc < 1 || nproc > 256) throw std::invalid_argument("--nproc must be in [1, 256], got " + std::to_string(nproc));
  if (!(dist_timeout > 0 && dist_timeout <= 86400))
    throw std::invalid_argument("--dist-timeout must be in (0, 86400] seconds, got " + std::to_string(dist_timeout));
  if (!(dist_bucket_mb >= 0 && dist_bucket_mb <= 1024))
    throw std::invalid_argument("--dist-bucket-mb must be in [0, 1024], got " + std::to_string(dist_bucket_mb));
  if (resume && overwrite)
    throw std::invalid_argument("--resume and --overwrite contradict each other (continue the run, or replace it)");
  if (!(lr_decay > 0 && lr_decay <= 1))
    throw std::invalid_argument("--lr-decay must be in (0, 1], got " + std::to_string(lr_decay));
  if (!freeze.empty() && init_from.empty())
    throw std::invalid_argument("--freeze keeps parts of a trained model fixed: give the model with --init-from");
}

nlohmann::json TrainingOptions::to_json() const {
  nlohmann::json j = {{"epochs", epochs},
                      {"batch_size", batch_size},
                      {"lr", lr},
                      {"optimizer", to_string(optimizer)},
                      {"weight_decay", weight_decay},
                      {"momentum", momentum},
                      {"clip", clip},
                      {"lr_schedule", to_string(lr_schedule)},
                      {"lr_decay", lr_decay},
                      {"lr_step", lr_step},
                      {"warmup", warmup},
                      {"min_lr", min_lr},
                      {"patience", patience},
                      {"eval_every", eval_every},
                      {"seed", seed},
                      {"max_time", max_time}};
  if (!freeze.empty()) j["freeze"] = freeze;
  if (nt_asgd > 0) j["nt_asgd"] = nt_asgd;
  return j;
}

}  // namespace cellstate
