#pragma once
// Searching a sequence model for output sequences: greedy and batched beam
// search with GNMT length normalisation, and sampling. Independent of the
// model: it sees only a StepModel (step_model.h).
//
// Beam search keeps, per input, the K best prefixes by summed log-probability;
// a hypothesis ending in eos is finished and scored
//   score = log P(y) / ((5 + |y|) / 6)^α          (Wu et al. 2016; α = 0: raw)
// The search for an input ends when K hypotheses are finished (or none is
// alive), or at the length limit ceil(ratio · source length) + 10, where the
// live prefixes are finished unended. Beam 1 is greedy search.

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "cellstate/decode/sampling.h"
#include "cellstate/decode/step_model.h"

namespace cellstate {

struct DecodingOptions {
  int64_t beam = 5;                // 1: greedy
  double length_penalty = 0.6;     // GNMT alpha: score / ((5 + length) / 6)^alpha (0: raw log-probability)
  double max_length_ratio = 2.0;   // at most ratio * source length + 10 tokens
  int64_t min_length = 0;          // eos is not allowed before this many tokens
  int64_t nbest = 1;               // hypotheses returned per input (<= beam)
  bool sample = false;             // draw each token under `sampling` instead of searching
  SamplingOptions sampling;        // the sampler's filters (sample only)
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

/// Each row's k most probable next tokens and their log-probabilities,
///   log p[r, v] = x[r, v] - m_r - log Σ_v' exp(x[r, v'] - m_r),  m_r = max_v x[r, v],
/// for logits x [R, V] (float32), without writing log p of whole rows: one
/// pass over a row keeps its k largest logits, a second sums the
/// exponentials (beam search's per-step cost besides the model: LibTorch's
/// log_softmax then topk took about 1.9 ms at 160 x 8000 on 2 threads,
/// about the bf16 output layer's own time). values [R, k] float64, best
/// first; tokens [R, k] int64; ties go to the lower token. `banned` (-1:
/// none) counts in the sum but is never chosen (eos before --min-length):
/// like a token of probability 0, it appears, as -inf, only in a row with
/// fewer than k other tokens. A -inf logit is a token of probability 0 (in
/// the sum, about 1e-38); a row with a +inf or NaN logit gets LibTorch's
/// log_softmax and topk instead.
struct TopLogProbs {
  torch::Tensor values;
  torch::Tensor tokens;
};
TopLogProbs top_log_probs(const torch::Tensor& logits, int64_t k, int64_t banned = -1);

/// Beam (or greedy) search over a batch of B inputs whose model state has B
/// rows (the search expands them to beams itself). Returns per input its
/// best hypotheses, best first. Every hypothesis ends at eos or at the
/// length limit.
std::vector<std::vector<Hypothesis>> beam_search(StepModel& model, const std::vector<int64_t>& source_lengths,
                                                 const DecodingOptions& options, int64_t bos, int64_t eos);

/// One sampled hypothesis per input: each token drawn by a Sampler seeded
/// from (options.seed, input index), so an input's sample does not depend on
/// the batch it is in.
std::vector<std::vector<Hypothesis>> sample_search(StepModel& model, const std::vector<int64_t>& source_lengths,
                                                   const DecodingOptions& options, int64_t bos, int64_t eos);

/// beam_search, or sample_search when options.sample.
std::vector<std::vector<Hypothesis>> decode(StepModel& model, const std::vector<int64_t>& source_lengths,
                                            const DecodingOptions& options, int64_t bos, int64_t eos);

}  // namespace cellstate
