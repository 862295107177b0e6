#pragma once
// oneDNN's own LSTM primitive (dnnl::lstm_forward, the library LibTorch
// loads) as a peer of the custom LSTM in cellstate-bench: forward inference
// at the bench's sizes and precision (float32, or bfloat16 data and weights
// with float32 bias and cell state), all layers and directions in one
// primitive, weights reordered once into the layout it prefers.

#include <memory>

#include "cellstate/bench/bench.h"

namespace cellstate::detail {

class OneDnnLstm {
 public:
  /// Throws std::invalid_argument when oneDNN cannot run this configuration
  /// (not an LSTM, step mode, or stacked layers whose input size differs
  /// from the hidden size).
  explicit OneDnnLstm(const BenchConfig& config);
  ~OneDnnLstm();
  OneDnnLstm(const OneDnnLstm&) = delete;
  OneDnnLstm& operator=(const OneDnnLstm&) = delete;

  /// One forward pass over the whole batch (every sequence at full length:
  /// the primitive has no variable lengths).
  void forward();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace cellstate::detail
