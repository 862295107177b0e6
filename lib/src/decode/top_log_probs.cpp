// top_log_probs (decode/decoding.h): a row's k best log-probabilities in two
// passes over its logits. Compiled with the kernels' flags (lib/CMakeLists.txt)
// so that the passes vectorise.

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cellstate/decode/decoding.h"
#include "cellstate/util/fast_math.h"

namespace cellstate {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// The k largest of x[0, n) (banned: skipped), best first, ties to the lower
/// index, into value/index (k slots, -inf and -1 where fewer); returns the
/// row's maximum over all n (banned included), or NaN when a logit is NaN. A chunk
/// of 32 whose maximum (one vectorised pass) does not beat the k-th best so
/// far is skipped: after the first few hundred logits, nearly all are.
float scan_row(const float* x, int64_t n, int64_t banned, int64_t k, float* value, int64_t* index) {
  std::fill(value, value + k, kNegInf);
  std::fill(index, index + k, int64_t{-1});
  int64_t filled = 0;
  float row_max = kNegInf;
  constexpr int64_t kChunk = 32;
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t end = std::min(n, begin + kChunk);
    float chunk_max = kNegInf;
    int nans = 0;
    // `v > m ? v : m` is the form GCC turns into vmaxps (std::max is not).
#pragma omp simd reduction(max : chunk_max) reduction(+ : nans)
    for (int64_t i = begin; i < end; ++i) {
      chunk_max = x[i] > chunk_max ? x[i] : chunk_max;
      nans += x[i] != x[i];
    }
    if (nans > 0) return std::numeric_limits<float>::quiet_NaN();
    row_max = chunk_max > row_max ? chunk_max : row_max;
    if (filled == k && !(chunk_max > value[k - 1])) continue;
    for (int64_t i = begin; i < end; ++i) {
      const float v = x[i];
      if (filled == k && !(v > value[k - 1])) continue;
      if (i == banned) continue;
      // Insert after every kept value >= v (earlier indices win ties).
      int64_t at = std::min(filled, k - 1);
      while (at > 0 && value[at - 1] < v) {
        value[at] = value[at - 1];
        index[at] = index[at - 1];
        --at;
      }
      value[at] = v;
      index[at] = i;
      filled = std::min(filled + 1, k);
    }
  }
  return row_max;
}

/// Σ exp(x[i] - shift) over x[0, n), in float as LibTorch's log_softmax sums.
float sum_exp(const float* x, int64_t n, float shift) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += detail::fast_exp(x[i] - shift);
  return sum;
}

}  // namespace

TopLogProbs top_log_probs(const torch::Tensor& logits_in, int64_t k, int64_t banned) {
  TORCH_CHECK(logits_in.dim() == 2 && logits_in.scalar_type() == torch::kFloat,
              "top_log_probs: expected float32 logits [rows, vocabulary], got ", logits_in.sizes(), " ",
              logits_in.scalar_type());
  const auto logits = logits_in.contiguous();
  const int64_t rows = logits.size(0), n = logits.size(1);
  TORCH_CHECK(k >= 1 && k <= n, "top_log_probs: k must be in [1, ", n, "], got ", k);
  TORCH_CHECK(banned >= -1 && banned < n, "top_log_probs: banned token ", banned, " outside the vocabulary of ", n);
  auto values = torch::empty({rows, k}, torch::kDouble);
  auto tokens = torch::empty({rows, k}, torch::kInt64);
  const float* x = logits.data_ptr<float>();
  double* out_values = values.data_ptr<double>();
  int64_t* out_tokens = tokens.data_ptr<int64_t>();
  std::vector<char> exotic(static_cast<size_t>(rows), 0);  // rows with a +inf or NaN logit, or all -inf
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, n));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> best(static_cast<size_t>(k));
    for (int64_t r = begin; r < end; ++r) {
      const float* row = x + r * n;
      int64_t* row_tokens = out_tokens + r * k;
      const float m = scan_row(row, n, banned, k, best.data(), row_tokens);
      // m is NaN or +inf for a row with a NaN or +inf logit (fast_exp
      // clamps, so a -inf logit counts as about 1e-38 of the sum).
      if (!std::isfinite(m)) {
        exotic[static_cast<size_t>(r)] = 1;
        continue;
      }
      const double log_z = static_cast<double>(m) + std::log(static_cast<double>(sum_exp(row, n, m)));
      for (int64_t i = 0; i < k; ++i) {
        out_values[r * k + i] = row_tokens[i] < 0 ? -std::numeric_limits<double>::infinity()
                                                  : static_cast<double>(best[static_cast<size_t>(i)]) - log_z;
        if (row_tokens[i] < 0) row_tokens[i] = banned;  // only the banned token is left to fill with
      }
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    if (!exotic[static_cast<size_t>(r)]) continue;
    auto logp = torch::log_softmax(logits[r], 0);
    if (banned >= 0) logp[banned] = kNegInf;
    auto [v, t] = logp.topk(k);
    values[r].copy_(v.to(torch::kDouble));
    tokens[r].copy_(t);
  }
  return {values, tokens};
}

}  // namespace cellstate
