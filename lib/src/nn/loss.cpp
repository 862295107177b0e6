#include "cellstate/nn/loss.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "cellstate/util/fast_math.h"

namespace cellstate {
namespace {

// Kept out of line so that GCC vectorises the exp loop.
__attribute__((noinline)) void smoothed_gradient_row(const float* logp, float* out, int64_t V, float scale,
                                                     float floor) {
  for (int64_t j = 0; j < V; ++j) out[j] = scale * detail::fast_exp(logp[j]) - floor;
}

class SmoothedCrossEntropy : public torch::autograd::Function<SmoothedCrossEntropy> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& target, double smoothing) {
    const int64_t N = logits.size(0), V = logits.size(1);
    const auto logp = torch::log_softmax(logits, 1);
    auto nll = logp.gather(1, target.unsqueeze(1)).squeeze(1);  // log p_i,y_i
    auto loss = -(1 - smoothing) * nll;
    if (smoothing > 0) loss = loss - (smoothing / static_cast<double>(V)) * logp.sum(1);
    ctx->save_for_backward({logp, target});
    ctx->saved_data["smoothing"] = smoothing;
    return N > 0 ? loss.mean() : loss.sum();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto logp = saved[0].contiguous();
    const auto target = saved[1].contiguous();
    const double smoothing = ctx->saved_data["smoothing"].toDouble();
    const int64_t N = logp.size(0), V = logp.size(1);
    const double scale = grads[0].item<double>() / static_cast<double>(std::max<int64_t>(N, 1));
    const double floor = scale * smoothing / static_cast<double>(V), gold = scale * (1 - smoothing);
    auto grad = torch::empty_like(logp);
    const int64_t* y = target.data_ptr<int64_t>();
    if (logp.scalar_type() == torch::kFloat) {
      const float* lp = logp.data_ptr<float>();
      float* out = grad.data_ptr<float>();
      at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          smoothed_gradient_row(lp + i * V, out + i * V, V, static_cast<float>(scale), static_cast<float>(floor));
          out[i * V + y[i]] -= static_cast<float>(gold);
        }
      });
    } else {  // float64: exact
      grad = logp.exp().mul_(scale).sub_(floor);
      grad.scatter_add_(1, target.unsqueeze(1), torch::full({N, 1}, -gold, grad.options()));
    }
    return {grad, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor smoothed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& target, double smoothing) {
  TORCH_CHECK(logits.dim() == 2 && (logits.scalar_type() == torch::kFloat || logits.scalar_type() == torch::kDouble),
              "smoothed_cross_entropy: expected float logits [N, V], got ", logits.scalar_type(), " ",
              logits.sizes());
  TORCH_CHECK(target.dim() == 1 && target.scalar_type() == torch::kInt64 && target.size(0) == logits.size(0),
              "smoothed_cross_entropy: expected int64 classes [", logits.size(0), "], got ", target.scalar_type(),
              " ", target.sizes());
  TORCH_CHECK(smoothing >= 0 && smoothing < 1, "smoothed_cross_entropy: smoothing must be in [0, 1), got ",
              smoothing);
  TORCH_CHECK(logits.size(1) > 0, "smoothed_cross_entropy: no classes (V = 0)");
  if (target.numel() > 0) {
    const auto lo = target.min().item<int64_t>(), hi = target.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < logits.size(1), "smoothed_cross_entropy: expected classes in [0, ", logits.size(1),
                "), got ", lo < 0 ? lo : hi);
  }
  return SmoothedCrossEntropy::apply(logits, target, smoothing);
}

}  // namespace cellstate
