#include "cellstate/nn/quantize.h"

#include <torch/torch.h>

namespace cellstate {

SymmetricInt8 quantize_symmetric_int8(const torch::Tensor& t, int64_t dim) {
  TORCH_CHECK(t.dim() == 2 && t.is_floating_point(), "quantize_symmetric_int8: expected a 2-D floating tensor, got ",
              t.dim(), "-D ", t.scalar_type());
  TORCH_CHECK(dim == 0 || dim == 1, "quantize_symmetric_int8: expected dim 0 or 1, got ", dim);
  torch::NoGradGuard no_grad;
  const auto x = t.detach().to(torch::kFloat);
  const auto amax = x.abs().amax(dim, /*keepdim=*/true);
  const auto scale = torch::where(amax > 0, amax / 127, torch::ones_like(amax));
  auto q = (x * scale.reciprocal()).round_().clamp_(-127, 127).to(torch::kChar);
  return {std::move(q), scale.squeeze(dim)};
}

}  // namespace cellstate
