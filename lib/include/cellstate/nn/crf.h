#pragma once
// A linear-chain conditional random field over tag sequences (for BiLSTM-CRF
// taggers), batched and masked.
//
// For emissions e[t, y] (B x T x K) and transition scores A[i, j] (tag i then
// tag j), with start scores s[y] and end scores f[y], a tag sequence y_1..y_n
// of a sentence of length n scores
//
//   score(y) = s[y_1] + sum_t e[t, y_t] + sum_{t>1} A[y_{t-1}, y_t] + f[y_n]
//
// and P(y | x) = exp(score(y)) / Z, log Z = logsumexp over all sequences
// (the forward algorithm). Constraints (e.g. I-PER may not follow O in BIO)
// add a large negative score to forbidden transitions, starts and ends, so
// Viterbi decoding never produces them and they carry ~no probability mass.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <vector>

#include "cellstate/data/tag_scheme.h"

namespace cellstate {

struct CRFOptions {
  explicit CRFOptions(int64_t num_tags) : num_tags_(num_tags) {}
  /// Number of tags K.
  TORCH_ARG(int64_t, num_tags);
};

/// Which transitions `tags` (names like "O", "B-PER") allow under `scheme`:
/// allowed[i][j] for i then j, and which tags may start and end a sentence.
struct TagConstraints {
  std::vector<std::vector<bool>> transition;
  std::vector<bool> start;
  std::vector<bool> end;
};
TagConstraints tag_constraints(const std::vector<std::string>& tags, TagScheme scheme);

class CRFImpl : public torch::nn::Cloneable<CRFImpl> {
 public:
  /// Score added to forbidden transitions, starts and ends.
  static constexpr double kForbidden = -10000.0;

  explicit CRFImpl(CRFOptions options);
  void reset() override;

  /// Forbids what `constraints` does not allow (all allowed by default).
  void set_constraints(const TagConstraints& constraints);

  /// log Z per sentence: emissions [B, T, K], mask [B, T] bool (a prefix of
  /// each row true, at least one) -> [B]. Computed in float64 loops with the
  /// gradients (the marginals) alongside, one sentence per task.
  torch::Tensor log_partition(const torch::Tensor& emissions, const torch::Tensor& mask) const;
  /// The same by the forward recurrence as LibTorch operations on [B, K, K]
  /// (autograd differentiates it): the reference the loops are tested against.
  torch::Tensor log_partition_tensors(const torch::Tensor& emissions, const torch::Tensor& mask) const;
  /// score(tags) per sentence: tags [B, T] int64 (ignored where mask is false) -> [B].
  torch::Tensor score(const torch::Tensor& emissions, const torch::Tensor& tags,
                      const torch::Tensor& mask) const;
  /// -log P(tags | emissions) per sentence -> [B] (the training loss).
  torch::Tensor neg_log_likelihood(const torch::Tensor& emissions, const torch::Tensor& tags,
                                   const torch::Tensor& mask) const;
  /// The best tag sequence of each sentence (its length), and its score.
  std::vector<std::vector<int64_t>> viterbi(const torch::Tensor& emissions, const torch::Tensor& mask,
                                            std::vector<double>* best_scores = nullptr) const;
  /// Forward and backward log-potentials: alpha[b, t, y] is the log-sum of the
  /// scores of prefixes ending in y at t; beta[b, t, y] of suffixes after y at
  /// t (including end scores). [B, T, K] each; undefined past each length.
  std::pair<torch::Tensor, torch::Tensor> forward_backward(const torch::Tensor& emissions,
                                                           const torch::Tensor& mask) const;
  /// Per-position tag marginals P(y_t = k | x): [B, T, K] (0 past each length).
  torch::Tensor marginals(const torch::Tensor& emissions, const torch::Tensor& mask) const;
  /// Probability that sentence b has exactly tags `segment` at positions
  /// start..start+len-1 and, after it, a tag not in `not_next` (e.g. no
  /// I-X continuing an entity X): the CRF marginal probability of an entity
  /// span.
  double segment_probability(const torch::Tensor& emissions, const torch::Tensor& mask, int64_t b,
                             int64_t start, const std::vector<int64_t>& segment,
                             const std::vector<int64_t>& not_next) const;

  /// Exactly the tags `tags` at positions start.. of sentence `batch`, and
  /// after them no tag of `not_next` (see segment_probability).
  struct SpanQuery {
    int64_t batch = 0;
    int64_t start = 0;
    std::vector<int64_t> tags;
    std::vector<int64_t> not_next;
  };
  /// segment_probability for many spans of a batch at the cost of one
  /// forward-backward pass.
  std::vector<double> span_probabilities(const torch::Tensor& emissions, const torch::Tensor& mask,
                                         const std::vector<SpanQuery>& queries) const;

  /// Transition, start and end scores with the constraints applied.
  torch::Tensor effective_transitions() const;
  torch::Tensor effective_start() const;
  torch::Tensor effective_end() const;

  CRFOptions options;
  torch::Tensor transitions;        // [K, K], parameter
  torch::Tensor start_transitions;  // [K], parameter
  torch::Tensor end_transitions;    // [K], parameter
  torch::Tensor allowed;            // [K, K] buffer, nonzero = allowed (bool unless converted by to())
  torch::Tensor allowed_start;      // [K] bool buffer
  torch::Tensor allowed_end;        // [K] bool buffer

 private:
  void check(const torch::Tensor& emissions, const torch::Tensor& mask) const;
};
TORCH_MODULE(CRF);

}  // namespace cellstate
