#pragma once
// Searching a sequence model for output sequences: greedy, batched beam
// search with GNMT length normalisation, and sampling. Independent of the
// model: it sees only a StepModel.

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace cellstate {

/// What the searches need from a model: the next token's log-probabilities
/// for each row, and a way to reorder the rows (for beams).
class StepModel {
 public:
  virtual ~StepModel() = default;
  /// previous [N] int64 -> log-probabilities [N, V]; `attention` (if not
  /// null) receives [N, S] weights when the model has them.
  virtual torch::Tensor log_probs(const torch::Tensor& previous, torch::Tensor* attention) = 0;
  /// Keeps rows `rows` [M] int64 of the state, in that order (M may differ from N).
  virtual void select(const torch::Tensor& rows) = 0;
};

struct DecodingOptions {
  int64_t beam = 5;                // 1: greedy
  double length_penalty = 0.6;     // GNMT alpha: score / ((5 + length) / 6)^alpha (0: raw log-probability)
  double max_length_ratio = 2.0;   // at most ratio * source length + 10 tokens
  int64_t min_length = 0;          // eos is not allowed before this many tokens
  int64_t nbest = 1;               // hypotheses returned per input (<= beam)
  int64_t sample_topk = 0;         // > 0: sample among the k most probable tokens instead of searching
  double temperature = 1.0;        // sampling temperature
  uint64_t seed = 1;               // sampling seed

  /// Throws std::invalid_argument naming the option.
  void validate() const;
};

struct Hypothesis {
  std::vector<int64_t> tokens;               // without bos and eos
  double log_prob = 0;                       // sum of the tokens' log-probabilities (eos included when reached)
  double score = 0;                          // log_prob normalised by the length penalty
  bool finished = false;                     // ended with eos (false: cut at the length limit)
  std::vector<std::vector<float>> attention; // per output token, weights over the source (if the model has them)
};

/// Decodes a batch of B inputs whose model state has B rows (the search
/// expands them to beams itself). Returns per input its best hypotheses,
/// best first. Every hypothesis ends at eos or at the length limit.
std::vector<std::vector<Hypothesis>> decode(StepModel& model, const std::vector<int64_t>& source_lengths,
                                            const DecodingOptions& options, int64_t bos, int64_t eos);

}  // namespace cellstate
