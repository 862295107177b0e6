#pragma once
// What a training run is asked to do: the optimiser, the learning-rate
// schedule, early stopping, checkpoints. Plain values with their defaults;
// the command-line spelling of each field is in cli/options.h.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace cellstate {

enum class OptimizerKind { kAdam, kAdamW, kSGD };
/// "adam" | "adamw" | "sgd"; throws std::invalid_argument naming the accepted values.
OptimizerKind parse_optimizer(const std::string& name);
std::string to_string(OptimizerKind kind);

enum class LrScheduleKind {
  kConstant,      // lr throughout
  kStep,          // × lr_decay every lr_step epochs
  kPlateau,       // × lr_decay after lr_step evaluations without improvement
  kWarmupLinear,  // linear warm-up over `warmup` steps, then linear decay to 0
};
/// "constant" | "step" | "plateau" | "warmup-linear".
LrScheduleKind parse_lr_schedule(const std::string& name);
std::string to_string(LrScheduleKind kind);

struct TrainingOptions {
  int64_t epochs = 10;               // passes over the training data
  int64_t batch_size = 32;           // examples per batch
  double lr = 1e-3;                  // learning rate
  OptimizerKind optimizer = OptimizerKind::kAdam;
  double weight_decay = 0.0;         // L2 (adam, sgd) or decoupled (adamw)
  double momentum = 0.0;             // sgd momentum
  double clip = 5.0;                 // clip gradients to this global norm (0: off)
  LrScheduleKind lr_schedule = LrScheduleKind::kConstant;
  double lr_decay = 0.5;             // factor for step and plateau
  int64_t lr_step = 1;               // step: decay every N epochs; plateau: after N bad evals
  int64_t warmup = 0;                // warmup-linear: warm-up steps
  double min_lr = 0.0;               // lower bound for step and plateau
  int64_t patience = 3;              // stop after N evaluations without improvement (0: never)
  int64_t eval_every = 0;            // evaluate every N steps (0: each epoch)
  int64_t nt_asgd = 0;               // NT-ASGD (Merity et al. 2017): from the first evaluation worse than the best
                                     // of all but the last N, evaluate and keep the average of the weights over
                                     // the steps since (0: never)
  uint64_t seed = 1;                 // seeds initialisation, data order, dropout
  bool resume = false;               // continue the interrupted (or finished) run of MODEL
  bool overwrite = false;            // replace a model already in MODEL (kept until the new one is complete)
  double max_time = 0;               // stop after this many minutes (0: no limit)
  double checkpoint_every = 10;      // also checkpoint every N minutes (0: only at evaluations)
  int64_t nproc = 1;                 // data-parallel processes to start on this machine (each trains on
                                     // batch_size / nproc of every batch)
  double dist_timeout = 600;         // seconds a rendezvous or gradient exchange may wait for the other ranks
  std::string init_from;             // fine-tune: the model directory (or shipped model's name) to start from
  std::string freeze;                // fine-tune: parameters kept fixed ("embeddings", "layers=K", name prefixes)
  double dist_bucket_mb = 0;         // 0: one gradient all-reduce after the backward pass; > 0: c10d's Reducer,
                                     // buckets of this many MB all-reduced during the backward pass

  /// Throws std::invalid_argument naming the option (--epochs, ...).
  void validate() const;
  /// The options as config.json's "training" records them.
  nlohmann::json to_json() const;
};

}  // namespace cellstate
