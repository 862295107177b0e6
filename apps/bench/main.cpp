// cellstate-bench: times the custom recurrent modules against LibTorch's.
#include <boost/program_options.hpp>

#include <iostream>

#include "cellstate/bench/bench.h"
#include "cellstate/cli/cli.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  cellstate::BenchConfig config;
  std::string rnn = "lstm";
  std::string precision = "fp32";
  bool json = false;
  po::options_description desc(
      "cellstate-bench: forward and forward+backward time of the custom recurrent modules\n"
      "against LibTorch's built-in ones, both in one run (medians after warm-up)\n\nOptions");
  desc.add_options()
      ("help,h", "show this help")
      ("rnn", po::value(&rnn)->default_value("lstm"), "recurrence: lstm, gru or rnn")
      ("layers", cellstate::defaulted(&config.layers), "stacked layers")
      ("hidden", cellstate::defaulted(&config.hidden), "hidden size")
      ("input", cellstate::defaulted(&config.input), "input feature size")
      ("batch", cellstate::defaulted(&config.batch), "batch size")
      ("seq", cellstate::defaulted(&config.seq), "sequence length (steps)")
      ("bidirectional", po::bool_switch(&config.bidirectional), "two directions")
      ("variable-lengths", po::bool_switch(&config.variable_lengths),
       "lengths spread over [seq/2, seq] (packed semantics)")
      ("step", po::bool_switch(&config.step),
       "time step-by-step inference (one call per step, as in generation)")
      ("threads", po::value(&config.threads)->default_value(0), "threads (0: every core)")
      ("precision", po::value(&precision)->default_value("fp32"),
       "fp32, bf16 or int8: the products of every implementation timed (bf16: bfloat16 operands, float32 sums; "
       "int8: dynamic quantization, forward passes only, oneDNN's LSTM primitive in bf16 as the peer)")
      ("repeat", cellstate::defaulted(&config.repeat), "timed repeats")
      ("warmup", cellstate::defaulted(&config.warmup), "untimed warm-up runs")
      ("seed", cellstate::defaulted(&config.seed), "random seed")
      ("json", po::bool_switch(&json), "print one JSON object instead of the table");
  if (auto status = cellstate::parse_command_line(argc, argv, desc, "cellstate-bench", [&] {
        config.kind = cellstate::parse_recurrent_kind(rnn);
        config.precision = cellstate::parse_matmul_precision(precision);
        cellstate::validate(config);
      })) {
    return *status;
  }
  try {
    const auto result = cellstate::run_benchmark(config);
    if (json) {
      std::cout << cellstate::to_json(result).dump() << "\n";
    } else {
      cellstate::print_table(std::cout, result, "cellstate-bench");
    }
  } catch (const std::exception& e) {
    std::cerr << "cellstate-bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
