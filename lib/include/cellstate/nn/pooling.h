#pragma once
// Max pooling over time of padded sequences (the sentiment classifier's
// `--pooling max`). Over h [B, T, F] with lengths len [B]:
//
//   out[b, f] = max( max_{t < len_b} h[b, t, f],  fill if len_b < T )
//
// which is h.masked_fill(t >= len_b, fill).max(1) — LibTorch's own
// composition, used when a gradient is recorded. Without one it is a single
// pass over the valid steps, rows split over the threads: the composition
// writes a masked copy of h and then reduces over the strided time
// dimension on one thread, about 5% of a bf16 sentiment batch at 2 threads.

#include <torch/types.h>

namespace cellstate {

/// out [B, F] as above. h float32 or float64 [B, T, F] (any strides),
/// lengths int64 [B] with values in [0, T]; checked (TORCH_CHECK, expected
/// vs got). NaN in a valid step propagates, as in Tensor::max.
torch::Tensor masked_max_over_time(const torch::Tensor& h, const torch::Tensor& lengths, double fill = -1e9);

}  // namespace cellstate
