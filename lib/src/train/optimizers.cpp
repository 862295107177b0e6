#include "cellstate/train/optimizers.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <string>

namespace cellstate {

namespace {

/// What one parameter's update needs, as float32 (LibTorch's kernels turn
/// the double scalars into the tensor's type the same way).
struct AdamStep {
  float beta1, beta2, step_size, bias2_sqrt, eps, l2;
};

/// Whether the fused loop covers p: dense float32 contiguous tensors.
bool fusable(const torch::Tensor& p, const torch::Tensor& g) {
  return p.scalar_type() == torch::kFloat && g.scalar_type() == torch::kFloat && p.is_contiguous() &&
         g.is_contiguous() && !g.is_sparse() && p.device().is_cpu() && g.device().is_cpu();
}

void adam_update(const torch::Tensor& p, const torch::Tensor& g, const torch::Tensor& m, const torch::Tensor& v,
                 const AdamStep& s) {
  float* pp = p.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* mp = m.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  const float a1 = 1 - s.beta1, a2 = 1 - s.beta2;
  at::parallel_for(0, p.numel(), 32768, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float grad = gp[i] + s.l2 * pp[i];
      const float mi = mp[i] * s.beta1 + a1 * grad;
      const float vi = vp[i] * s.beta2 + a2 * grad * grad;
      mp[i] = mi;
      vp[i] = vi;
      pp[i] -= s.step_size * mi / (std::sqrt(vi) / s.bias2_sqrt + s.eps);
    }
  });
}

/// The state LibTorch's step would create on a parameter's first update.
template <class State>
State& state_of(ska::flat_hash_map<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>& states,
                const torch::Tensor& p) {
  const auto key = c10::guts::to_string(p.unsafeGetTensorImpl());
  auto it = states.find(key);
  if (it == states.end()) {
    auto s = std::make_unique<State>();
    s->step(0);
    s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    it = states.emplace(key, std::move(s)).first;
  }
  return static_cast<State&>(*it->second);
}

/// One Adam or AdamW step over the groups: the fused loop where it applies,
/// else `fallback` (LibTorch's own step) for the whole optimiser.
template <class Options, class State>
bool fused_step(std::vector<torch::optim::OptimizerParamGroup>& groups,
                ska::flat_hash_map<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>& states,
                bool decoupled) {
  for (auto& group : groups) {
    const auto& o = static_cast<const Options&>(group.options());
    if (o.amsgrad()) return false;
    for (const auto& p : group.params())
      if (p.grad().defined() && !fusable(p, p.grad())) return false;
  }
  torch::NoGradGuard no_grad;
  for (auto& group : groups) {
    const auto& o = static_cast<const Options&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& state = state_of<State>(states, p);
      state.step(state.step() + 1);
      const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
      const auto t = static_cast<double>(state.step());
      const double bias1 = 1 - std::pow(beta1, t), bias2 = 1 - std::pow(beta2, t);
      if (decoupled && o.weight_decay() != 0) p.mul_(1 - o.lr() * o.weight_decay());
      const AdamStep s{static_cast<float>(beta1),
                       static_cast<float>(beta2),
                       static_cast<float>(o.lr() / bias1),
                       static_cast<float>(std::sqrt(bias2)),
                       static_cast<float>(o.eps()),
                       decoupled ? 0.0f : static_cast<float>(o.weight_decay())};
      adam_update(p, p.grad(), state.exp_avg(), state.exp_avg_sq(), s);
      // Written through raw pointers: the version counter must say so, or
      // what is cached by it (the bfloat16 copies of the weights, nn/gemm.h's
      // TensorStamp) would go on serving the old values.
      for (const auto* t : {&p, &state.exp_avg(), &state.exp_avg_sq()}) t->unsafeGetTensorImpl()->bump_version();
    }
  }
  return true;
}


/// The closure's loss (with gradients enabled), or none.
torch::Tensor closure_loss(const torch::optim::Optimizer::LossClosure& closure) {
  if (!closure) return {};
  torch::AutoGradMode enable_grad(true);
  return closure();
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  auto loss = closure_loss(closure);
  if (!fused_step<torch::optim::AdamOptions, torch::optim::AdamParamState>(param_groups_, state_, false))
    torch::optim::Adam::step();
  return loss;
}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  auto loss = closure_loss(closure);
  if (!fused_step<torch::optim::AdamWOptions, torch::optim::AdamWParamState>(param_groups_, state_, true))
    torch::optim::AdamW::step();
  return loss;
}

double clip_gradient_norm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  TORCH_CHECK(max_norm > 0, "clip_gradient_norm: expected a positive max_norm, got ", max_norm);
  torch::NoGradGuard no_grad;
  double squares = 0;
  for (const auto& p : parameters) {
    const auto& g = p.grad();
    if (!g.defined()) continue;
    if (g.scalar_type() != torch::kFloat || !g.is_contiguous() || g.is_sparse()) {
      squares += g.to(torch::kDouble).pow(2).sum().item<double>();
      continue;
    }
    const float* x = g.data_ptr<float>();
    squares += at::parallel_reduce(
        0, g.numel(), 32768, 0.0,
        [x](int64_t begin, int64_t end, double sum) {
          // float partial sums of 1,024 elements, added in double
          for (int64_t i = begin; i < end; i += 1024) {
            float part = 0;
            const int64_t stop = std::min(end, i + 1024);
#pragma omp simd reduction(+ : part)
            for (int64_t j = i; j < stop; ++j) part += x[j] * x[j];
            sum += part;
          }
          return sum;
        },
        std::plus<double>());
  }
  const double norm = std::sqrt(squares);
  const double coefficient = max_norm / (norm + 1e-6);
  if (coefficient < 1)
    for (const auto& p : parameters)
      if (p.grad().defined()) p.grad().mul_(coefficient);
  return norm;
}

}  // namespace cellstate
