#pragma once
// Timing of the custom recurrent modules against LibTorch's built-in ones.

#include <nlohmann/json.hpp>

#include <iosfwd>
#include <vector>
#include <string>

#include "cellstate/nn/gemm.h"
#include "cellstate/nn/rnn.h"
#include "cellstate/util/timing.h"

namespace cellstate {

/// What to time. Defaults are the classic "medium" language-model LSTM.
struct BenchConfig {
  RecurrentKind kind = RecurrentKind::kLSTM;
  int64_t layers = 2;
  int64_t hidden = 650;
  int64_t input = 650;
  int64_t batch = 32;
  int64_t seq = 35;
  bool bidirectional = false;
  /// Lengths spread evenly over [seq/2, seq] instead of all seq.
  bool variable_lengths = false;
  /// Time single-step inference (one call per step, as in generation)
  /// instead of whole-sequence forward and forward+backward.
  bool step = false;
  int threads = 0;  ///< 0: every core
  /// The products' arithmetic of every implementation timed (nn/gemm.h):
  /// custom kernels, the built-in modules (LibTorch's CPU autocast) and
  /// oneDNN's primitive (bf16 data, float32 bias and cell state).
  MatmulPrecision precision = MatmulPrecision::kFloat32;
  int repeat = 10;
  int warmup = 2;
  uint64_t seed = 1;
};

/// Median time of one measured operation and its arithmetic rate.
struct Timing {
  double ms = 0;
  double gflops = 0;
};

struct BenchResult {
  BenchConfig config;
  int threads = 0;
  double gemm_gflops = 0;  ///< the machine's limit: the best of the two rates below
  double openblas_gemm_gflops = 0;  ///< 1024³ float32 matmul through LibTorch (OpenBLAS), same run
  double onednn_gemm_gflops = 0;    ///< the same through nn/gemm.h (oneDNN's matmul), at `precision`
  std::string gemm_backend;         ///< what the custom kernels' products used ("onednn" or "torch")
  Timing custom_forward, builtin_forward;
  Timing custom_train, builtin_train;  ///< forward+backward (not in step mode)
  Timing custom_step, builtin_step;    ///< whole step-by-step sequence (step mode)
  /// oneDNN's own LSTM primitive, forward inference at `precision` (LSTM, whole
  /// sequences; every sequence at full length); empty `onednn_note` when timed.
  Timing onednn_forward;
  std::string onednn_note;
  double forward_vs_onednn = 0;  ///< custom / oneDNN primitive time
  double forward_ratio = 0;  ///< custom / builtin time
  double train_ratio = 0;
  double step_ratio = 0;
};

/// Throws std::invalid_argument naming the first bad field.
void validate(const BenchConfig& config);
/// Runs both implementations in one process, interleaved, and returns medians.
BenchResult run_benchmark(const BenchConfig& config);
/// The result as a table headed "TITLE: what was timed".
void print_table(std::ostream& out, const BenchResult& result, const std::string& title);
nlohmann::json to_json(const BenchResult& result);

}  // namespace cellstate
