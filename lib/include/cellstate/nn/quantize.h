#pragma once
// Symmetric int8 rounding of weights, the one definition used by the int8
// products (nn/gemm.h kInt8, per column of the right operand) and by the
// int8 model files (tasks/model_dir.h WeightStorage::kInt8, per row), so
// that a weight loaded from an int8 file rounds to the integers it was
// stored as.
//
// For a float tensor t [R, C] and the dimension `dim` the maxima are taken
// over (like amax(dim): 1 gives one scale per row, 0 one per column):
//   scale[i] = max over dim of |t| in slice i / 127   (1 for an all-zero slice),
//   q = round(t / scale) clamped to [-127, 127] (round half to even),
// so t ≈ scale · q, with |t - scale · q| <= scale / 2.

#include <torch/types.h>

namespace cellstate {

struct SymmetricInt8 {
  torch::Tensor q;      // int8, t's shape
  torch::Tensor scale;  // float32 [R] (dim = 1) or [C] (dim = 0)
};

/// t: 2-D floating tensor (any layout; float16 is widened first);
/// `dim` 0 or 1 as above. Records no gradients.
SymmetricInt8 quantize_symmetric_int8(const torch::Tensor& t, int64_t dim);

}  // namespace cellstate
