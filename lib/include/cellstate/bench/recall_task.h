#pragma once
// A long-memory task that separates gated from plain recurrences: read a
// sequence whose first symbol is one of `classes` signal symbols and whose
// other steps are random distractor symbols, and name the first symbol from
// the final hidden state. Used by the demo and by the library's tests.

#include <functional>

#include "cellstate/nn/rnn.h"

namespace cellstate {

struct RecallTaskOptions {
  RecurrentKind kind = RecurrentKind::kLSTM;
  Implementation impl = Implementation::kCustom;
  int64_t steps = 50;       ///< sequence length
  int64_t classes = 4;      ///< signal symbols (chance is 1/classes)
  int64_t distractors = 4;  ///< distractor symbols
  int64_t hidden = 32;
  int64_t batch = 64;
  int iterations = 1000;    ///< Adam steps
  double lr = 0.005;
  double forget_bias = 3.0; ///< LSTM forget-gate bias at initialisation
  uint64_t seed = 11;
  /// Called every 100 iterations with (iteration, training loss), if set.
  std::function<void(int, double)> progress;
};

/// Trains a recurrent classifier on the task and returns its accuracy on
/// 512 fresh sequences.
double train_recall_task(const RecallTaskOptions& options);

}  // namespace cellstate
