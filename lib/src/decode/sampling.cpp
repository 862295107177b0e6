#include "cellstate/decode/sampling.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

namespace cellstate {

void SamplingOptions::validate() const {
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw std::invalid_argument("--temperature must be > 0, got " + std::to_string(temperature));
  if (top_k < 0) throw std::invalid_argument("--top-k must be >= 0 (0: off), got " + std::to_string(top_k));
  if (!(top_p > 0 && top_p <= 1))
    throw std::invalid_argument("--top-p must be in (0, 1], got " + std::to_string(top_p));
  if (!(repetition_penalty >= 1) || !std::isfinite(repetition_penalty))
    throw std::invalid_argument("--repetition-penalty must be >= 1 (1: off), got " +
                                std::to_string(repetition_penalty));
}

Sampler::Sampler(SamplingOptions options, uint64_t seed) : options_(options), rng_(seed) { options_.validate(); }

int64_t Sampler::next(const torch::Tensor& logits, const std::vector<int64_t>& seen,
                      const std::vector<int64_t>& banned) {
  TORCH_CHECK(logits.dim() == 1 && logits.size(0) > 0, "Sampler: expected logits of shape [vocab], got ",
              logits.sizes());
  const auto v = logits.to(torch::kFloat64).contiguous();
  const int64_t n = v.size(0);
  std::vector<double> x(v.data_ptr<double>(), v.data_ptr<double>() + n);
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  if (options_.repetition_penalty != 1.0) {
    std::vector<char> done(static_cast<size_t>(n), 0);
    for (auto id : seen) {
      if (id < 0 || id >= n || done[static_cast<size_t>(id)]) continue;
      done[static_cast<size_t>(id)] = 1;
      double& l = x[static_cast<size_t>(id)];
      l = l > 0 ? l / options_.repetition_penalty : l * options_.repetition_penalty;
    }
  }
  for (auto id : banned)
    if (id >= 0 && id < n) x[static_cast<size_t>(id)] = kNegInf;
  if (options_.greedy) return std::max_element(x.begin(), x.end()) - x.begin();

  // Candidates, most probable first when a filter needs the order.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const auto by_logit = [&](int64_t a, int64_t b) {
    return x[static_cast<size_t>(a)] > x[static_cast<size_t>(b)] ||
           (x[static_cast<size_t>(a)] == x[static_cast<size_t>(b)] && a < b);
  };
  size_t keep = order.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < keep) {
    keep = static_cast<size_t>(options_.top_k);
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep), order.end(), by_logit);
  } else if (options_.top_p < 1.0) {
    std::sort(order.begin(), order.end(), by_logit);
  }
  const double top = *std::max_element(x.begin(), x.end());
  if (!std::isfinite(top)) throw std::runtime_error("Sampler: no token can be chosen (all banned or not finite)");
  std::vector<double> p(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    const double l = x[static_cast<size_t>(order[i])];
    p[i] = std::isfinite(l) ? std::exp((l - top) / options_.temperature) : 0.0;
    total += p[i];
  }
  if (options_.top_p < 1.0) {
    // The fewest leading tokens whose probability reaches top_p (at least one).
    double mass = 0;
    size_t cut = 0;
    while (cut < keep) {
      mass += p[cut] / total;
      ++cut;
      if (mass >= options_.top_p) break;
    }
    keep = cut;
    total = std::accumulate(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  }
  const double u = rng_.uniform() * total;
  double acc = 0;
  size_t last = 0;
  for (size_t i = 0; i < keep; ++i) {
    if (p[i] <= 0) continue;
    acc += p[i];
    last = i;
    if (u < acc) return order[i];
  }
  return order[last];
}

}  // namespace cellstate
