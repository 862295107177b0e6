#include "cellstate/options.h"

#include "cellstate/cli.h"
#include "cellstate/model_dir.h"
#include "cellstate/runtime.h"

#include <torch/cuda.h>

#include <stdexcept>

namespace cellstate {

namespace po = boost::program_options;

void ModelOptions::add_to(po::options_description& options, bool architecture) {
  options.add_options()("model", defaulted(&dir), "model directory")(
      "impl", defaulted(&impl),
      "recurrent implementation: custom (cellstate's fused kernels) or builtin (torch::nn)");
  if (!architecture) return;
  options.add_options()("rnn", defaulted(&rnn), "recurrent cell: lstm, gru or rnn")(
      "layers", defaulted(&layers), "stacked recurrent layers")(
      "hidden", defaulted(&hidden), "hidden units per direction")(
      "embed", defaulted(&embed), "embedding size")(
      "dropout", defaulted(&dropout), "dropout probability")(
      "bidirectional", defaulted(&bidirectional)->implicit_value(true),
      "bidirectional recurrent layers (--bidirectional or --bidirectional=false)");
}

void ModelOptions::validate() const {
  if (dir.empty()) throw std::invalid_argument("--model DIR is required");
  parse_recurrent_kind(rnn);
  parse_implementation(impl);
  if (layers < 1) throw std::invalid_argument("--layers must be >= 1, got " + std::to_string(layers));
  if (hidden < 1) throw std::invalid_argument("--hidden must be >= 1, got " + std::to_string(hidden));
  if (embed < 1) throw std::invalid_argument("--embed must be >= 1, got " + std::to_string(embed));
  if (dropout < 0 || dropout >= 1)
    throw std::invalid_argument("--dropout must be in [0, 1), got " + std::to_string(dropout));
}

nlohmann::json ModelOptions::to_json() const {
  return {{"rnn", rnn},       {"layers", layers},   {"hidden", hidden},
          {"embed", embed},   {"dropout", dropout}, {"bidirectional", bidirectional},
          {"trained_impl", impl}};
}

void ModelOptions::from_json(const nlohmann::json& j, const std::string& file) {
  rnn = config_get<std::string>(j, "rnn", file);
  layers = config_get<int64_t>(j, "layers", file);
  hidden = config_get<int64_t>(j, "hidden", file);
  embed = config_get<int64_t>(j, "embed", file);
  dropout = config_get<double>(j, "dropout", file);
  bidirectional = config_get<bool>(j, "bidirectional", file);
  try {
    parse_recurrent_kind(rnn);
  } catch (const std::exception& e) {
    throw_config_error(file, e.what());
  }
}

void TrainingOptions::add_to(po::options_description& options) {
  options.add_options()("epochs", defaulted(&epochs), "maximum epochs")(
      "batch-size", defaulted(&batch_size), "examples per batch")(
      "lr", defaulted(&lr), "learning rate")(
      "optimizer", defaulted(&optimizer), "adam, adamw or sgd")(
      "weight-decay", defaulted(&weight_decay),
      "weight decay (decoupled for adamw)")(
      "momentum", defaulted(&momentum), "SGD momentum")(
      "clip", defaulted(&clip), "clip gradients to this global norm (0: off)")(
      "lr-schedule", defaulted(&lr_schedule),
      "constant, step (x lr-decay every lr-step epochs), plateau (x lr-decay after lr-step "
      "evaluations without improvement) or warmup-linear (linear warm-up over --warmup steps, "
      "then linear decay to 0)")(
      "lr-decay", defaulted(&lr_decay), "decay factor (step, plateau)")(
      "lr-step", defaulted(&lr_step), "epochs (step) or evaluations (plateau)")(
      "warmup", defaulted(&warmup), "warm-up steps (warmup-linear)")(
      "min-lr", defaulted(&min_lr), "lowest learning rate (step, plateau)")(
      "patience", defaulted(&patience),
      "early stopping: evaluations without improvement before stopping (0: never)")(
      "eval-every", defaulted(&eval_every),
      "evaluate every N steps (0: after each epoch)")(
      "seed", defaulted(&seed), "random seed (initialisation, data order, dropout)")(
      "resume", defaulted(&resume)->implicit_value(true),
      "continue from MODEL/checkpoint.pt")(
      "max-time", defaulted(&max_time),
      "stop training after this many minutes (0: no limit)")(
      "checkpoint-every", defaulted(&checkpoint_every),
      "also write a checkpoint every N minutes (0: only at evaluations)");
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
  non_negative("max-time", max_time);
  non_negative("checkpoint-every", checkpoint_every);
  positive("lr-step", static_cast<double>(lr_step));
  if (!(lr_decay > 0 && lr_decay <= 1))
    throw std::invalid_argument("--lr-decay must be in (0, 1], got " + std::to_string(lr_decay));
  if (optimizer != "adam" && optimizer != "adamw" && optimizer != "sgd")
    throw std::invalid_argument("--optimizer must be adam, adamw or sgd, got '" + optimizer + "'");
  if (lr_schedule != "constant" && lr_schedule != "step" && lr_schedule != "plateau" &&
      lr_schedule != "warmup-linear")
    throw std::invalid_argument("--lr-schedule must be constant, step, plateau or warmup-linear, got '" +
                                lr_schedule + "'");
}

nlohmann::json TrainingOptions::to_json() const {
  return {{"epochs", epochs},           {"batch_size", batch_size}, {"lr", lr},
          {"optimizer", optimizer},     {"weight_decay", weight_decay},
          {"momentum", momentum},       {"clip", clip},             {"lr_schedule", lr_schedule},
          {"lr_decay", lr_decay},       {"lr_step", lr_step},       {"warmup", warmup},
          {"min_lr", min_lr},           {"patience", patience},     {"eval_every", eval_every},
          {"seed", seed},               {"max_time", max_time}};
}

void RuntimeOptions::add_to(po::options_description& options) {
  options.add_options()("threads", defaulted(&threads), "threads (0: every core)")(
      "device", defaulted(&device), "cpu or cuda")(
      "quiet,q", po::bool_switch(&quiet), "no progress output on stderr");
}

void RuntimeOptions::validate() const {
  if (threads < 0) throw std::invalid_argument("--threads must be >= 0, got " + std::to_string(threads));
  if (device != "cpu" && device != "cuda")
    throw std::invalid_argument("--device must be cpu or cuda, got '" + device + "'");
  if (device == "cuda" && !torch::cuda::is_available())
    throw std::invalid_argument("--device cuda: no CUDA device available to this LibTorch build");
}

int RuntimeOptions::apply() const { return configure_threads(threads); }

UseOptions::UseOptions(const std::string& shipped_model) { model.dir = shipped_model_dir(shipped_model); }

void UseOptions::add_to(po::options_description& options) {
  add_help_and_config(options, config);
  model.add_to(options, false);
  runtime.add_to(options);
}

void UseOptions::validate() const {
  runtime.validate();
  parse_implementation(model.impl);
}

}  // namespace cellstate
