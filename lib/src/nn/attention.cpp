#include "cellstate/nn/attention.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

namespace cellstate {
namespace {

/// Whether the plain loops take these operands (else torch::bmm).
bool loops_take(const torch::Tensor& a, const torch::Tensor& b) {
  const bool records = torch::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad());
  return !records && a.scalar_type() == torch::kFloat && b.scalar_type() == torch::kFloat && a.device().is_cpu() &&
         b.device().is_cpu();
}

/// Rows per task: about 64k multiply-adds.
int64_t grain(int64_t work_per_row) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, work_per_row)); }

}  // namespace

torch::Tensor attention_scores(const torch::Tensor& keys_in, const torch::Tensor& query_in) {
  TORCH_CHECK(keys_in.dim() == 3 && query_in.dim() == 2 && query_in.size(0) == keys_in.size(0) &&
                  query_in.size(1) == keys_in.size(2),
              "attention_scores: expected keys [B, S, D] and query [B, D], got ", keys_in.sizes(), " and ",
              query_in.sizes());
  if (!loops_take(keys_in, query_in)) return torch::bmm(keys_in, query_in.unsqueeze(2)).squeeze(2);
  const auto keys = keys_in.contiguous();
  const auto query = query_in.contiguous();
  const int64_t B = keys.size(0), S = keys.size(1), D = keys.size(2);
  auto scores = torch::empty({B, S}, keys.options());
  const float* k = keys.data_ptr<float>();
  const float* q = query.data_ptr<float>();
  float* out = scores.data_ptr<float>();
  at::parallel_for(0, B, grain(S * D), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* qb = q + b * D;
      for (int64_t s = 0; s < S; ++s) {
        const float* ks = k + (b * S + s) * D;
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t d = 0; d < D; ++d) sum += ks[d] * qb[d];
        out[b * S + s] = sum;
      }
    }
  });
  return scores;
}

torch::Tensor attention_context(const torch::Tensor& weights_in, const torch::Tensor& memory_in) {
  TORCH_CHECK(weights_in.dim() == 2 && memory_in.dim() == 3 && memory_in.size(0) == weights_in.size(0) &&
                  memory_in.size(1) == weights_in.size(1),
              "attention_context: expected weights [B, S] and memory [B, S, D], got ", weights_in.sizes(), " and ",
              memory_in.sizes());
  if (!loops_take(weights_in, memory_in)) return torch::bmm(weights_in.unsqueeze(1), memory_in).squeeze(1);
  const auto weights = weights_in.contiguous();
  const auto memory = memory_in.contiguous();
  const int64_t B = memory.size(0), S = memory.size(1), D = memory.size(2);
  auto context = torch::zeros({B, D}, memory.options());
  const float* w = weights.data_ptr<float>();
  const float* m = memory.data_ptr<float>();
  float* out = context.data_ptr<float>();
  at::parallel_for(0, B, grain(S * D), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* ob = out + b * D;
      for (int64_t s = 0; s < S; ++s) {
        const float ws = w[b * S + s];
        const float* ms = m + (b * S + s) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) ob[d] += ws * ms[d];
      }
    }
  });
  return context;
}

}  // namespace cellstate
