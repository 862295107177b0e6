#pragma once
// Choosing the next token from a model's logits: greedy or sampled, with
// temperature, top-k, nucleus (top-p) filtering and a repetition penalty.
// Independent of any model; used by the generating apps.

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "cellstate/util/random.h"

namespace cellstate {

struct SamplingOptions {
  bool greedy = false;              // always the most probable token (the others are ignored)
  double temperature = 1.0;         // logits are divided by it (> 0; < 1 sharpens)
  int64_t top_k = 0;                // keep only the k most probable tokens (0: all)
  double top_p = 1.0;               // keep the fewest most probable tokens whose mass reaches p (1: all)
  double repetition_penalty = 1.0;  // CTRL's: a seen token's logit is divided by it (multiplied if negative)

  /// Throws std::invalid_argument naming the option (--temperature, ...).
  void validate() const;
};

/// Draws tokens under SamplingOptions. Its random numbers come from its own
/// generator, so a sampler built with the same seed draws the same tokens
/// from the same logits.
class Sampler {
 public:
  Sampler(SamplingOptions options, uint64_t seed);

  /// logits [V] (any floating type). `seen`: the tokens the repetition
  /// penalty applies to; `banned`: tokens never chosen. Returns the id.
  int64_t next(const torch::Tensor& logits, const std::vector<int64_t>& seen = {},
               const std::vector<int64_t>& banned = {});

  const SamplingOptions& options() const { return options_; }

 private:
  SamplingOptions options_;
  DataRng rng_;
};

}  // namespace cellstate
