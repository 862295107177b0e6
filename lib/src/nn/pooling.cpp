#include "cellstate/nn/pooling.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>

namespace cellstate {
namespace {

// Kept out of line so that GCC vectorises the row's loop.
template <typename T>
__attribute__((noinline)) void max_into(T* __restrict__ out, const T* __restrict__ row, int64_t F) {
  for (int64_t f = 0; f < F; ++f) {
    const T v = row[f];
    out[f] = (v > out[f] || v != v) ? v : out[f];
  }
}

template <typename T>
void pool_rows(const torch::Tensor& h, const int64_t* len, torch::Tensor& out, T fill) {
  const int64_t B = h.size(0), T_ = h.size(1), F = h.size(2);
  const int64_t sb = h.stride(0), st = h.stride(1);
  const T* base = h.data_ptr<T>();
  T* o = out.data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, T_ * F));
  at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* ob = o + b * F;
      std::fill(ob, ob + F, len[b] < T_ ? fill : -std::numeric_limits<T>::infinity());
      for (int64_t t = 0; t < len[b]; ++t) max_into(ob, base + b * sb + t * st, F);
    }
  });
}

}  // namespace

torch::Tensor masked_max_over_time(const torch::Tensor& h, const torch::Tensor& lengths, double fill) {
  TORCH_CHECK(h.dim() == 3 && (h.scalar_type() == torch::kFloat || h.scalar_type() == torch::kDouble),
              "masked_max_over_time: expected float h [batch, time, features], got ", h.scalar_type(), " ",
              h.sizes());
  TORCH_CHECK(lengths.dim() == 1 && lengths.scalar_type() == torch::kInt64 && lengths.size(0) == h.size(0),
              "masked_max_over_time: expected int64 lengths [", h.size(0), "], got ", lengths.scalar_type(), " ",
              lengths.sizes());
  const int64_t T = h.size(1);
  if (lengths.numel() > 0) {
    const auto lo = lengths.min().item<int64_t>(), hi = lengths.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi <= T, "masked_max_over_time: expected lengths in [0, ", T, "], got ", lo < 0 ? lo : hi);
  }
  TORCH_CHECK(T > 0, "masked_max_over_time: no time steps (T = 0)");
  if (torch::GradMode::is_enabled() && h.requires_grad()) {
    const auto mask = torch::arange(T, lengths.options()).unsqueeze(0) < lengths.unsqueeze(1);  // [B, T]
    return std::get<0>(h.masked_fill(~mask.unsqueeze(2), fill).max(1));
  }
  // A unit stride over features lets the row loop vectorise.
  const auto x = h.stride(2) == 1 ? h : h.contiguous();
  const auto len = lengths.contiguous();
  auto out = torch::empty({h.size(0), h.size(2)}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "masked_max_over_time", [&] {
    pool_rows<scalar_t>(x, len.data_ptr<int64_t>(), out, static_cast<scalar_t>(fill));
  });
  return out;
}

}  // namespace cellstate
