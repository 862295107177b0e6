// cellstate-demo: a short tour of the recurrent library until the apps exist.
// Trains a tiny LSTM and a tiny plain RNN to recall the first of 50 tokens,
// and shows that the custom and built-in LSTMs compute the same thing.
#include <boost/program_options.hpp>

#include <iomanip>
#include <iostream>

#include "cellstate/cli/cli.h"
#include "cellstate/bench/recall_task.h"
#include "cellstate/util/runtime.h"

namespace po = boost::program_options;

namespace {

struct DemoOptions {
  int threads = 0;
  cellstate::RecallTaskOptions task;  // sizes, learning rate, forget bias, seed
};

double recall(cellstate::RecurrentKind kind, const DemoOptions& o) {
  cellstate::RecallTaskOptions task = o.task;
  task.kind = kind;
  task.progress = [&](int it, double loss) {
    std::cerr << "   " << cellstate::to_string(kind) << " step " << it << " loss " << loss << "\n";
  };
  return cellstate::train_recall_task(task);
}

}  // namespace

int main(int argc, char** argv) {
  DemoOptions o;
  po::options_description desc("cellstate-demo: the recurrent library at work\n\nOptions");
  desc.add_options()("help,h", "show this help")(
      "threads", po::value(&o.threads)->default_value(0), "threads (0: every core)")(
      "iterations", cellstate::defaulted(&o.task.iterations),
      "training steps per model")(
      "hidden", cellstate::defaulted(&o.task.hidden), "hidden size")(
      "steps", cellstate::defaulted(&o.task.steps), "sequence length")(
      "lr", cellstate::defaulted(&o.task.lr), "Adam learning rate")(
      "forget-bias", cellstate::defaulted(&o.task.forget_bias),
      "LSTM forget-gate bias at initialisation")(
      "seed", cellstate::defaulted(&o.task.seed), "random seed");
  if (auto status = cellstate::parse_command_line(argc, argv, desc, "cellstate-demo", [&] {
        if (o.task.iterations <= 0 || o.task.hidden <= 0 || o.task.steps <= 0 || o.task.lr <= 0)
          throw std::invalid_argument("--iterations, --hidden, --steps and --lr must be positive");
      })) {
    return *status;
  }
  const int threads = cellstate::configure_threads(o.threads);
  std::cout << "cellstate demo (" << threads << (threads == 1 ? " thread" : " threads") << ", BLAS: " << cellstate::blas_info()
            << ")\n\n1. Custom and built-in LSTM compute the same function:\n";
  auto opts = cellstate::RecurrentOptions(8, 16).num_layers(2).bidirectional(true);
  auto custom = cellstate::make_recurrent(opts);
  auto builtin =
      cellstate::make_recurrent(cellstate::RecurrentOptions(opts).impl(cellstate::Implementation::kBuiltin));
  {
    torch::NoGradGuard g;
    auto dst = builtin->named_parameters();
    for (const auto& p : custom->named_parameters()) dst[p.key()].copy_(p.value());
    auto x = torch::randn({12, 3, 8});
    auto lengths = torch::tensor({12, 5, 9});
    auto a = custom->forward(x, lengths);
    auto b = builtin->forward(x, lengths);
    // The exact figure depends on the GEMM's summation order (threads, CPU);
    // what matters is that it is float32 rounding, not a different function.
    const double diff = (a.output - b.output).abs().max().item<double>();
    std::cout << "   max |custom - builtin| over outputs of a padded batch: ";
    if (diff < 1e-6) std::cout << "below 1e-6 (float32 rounding)\n";
    else std::cout << diff << "\n";
  }
  std::cout << "\n2. Recall the first of " << o.task.steps
            << " symbols (4 classes, the rest distractors, chance 25%), hidden " << o.task.hidden
            << ", " << o.task.iterations << " Adam steps:\n";
  const double lstm = recall(cellstate::RecurrentKind::kLSTM, o);
  const double rnn = recall(cellstate::RecurrentKind::kRNN, o);
  std::cout << std::fixed << std::setprecision(1) << "   LSTM accuracy: " << 100 * lstm
            << "%\n   RNN accuracy:  " << 100 * rnn << "%\n";
  return 0;
}
