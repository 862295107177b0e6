#include "cellstate/nn/attention.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <mutex>
#include <utility>
#include <vector>

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

// ---------------------------------------------------------------------------
// AttentionSource

struct AttentionSource::Steps {
  std::mutex mutex;
  std::vector<torch::Tensor> score_grads, queries;   // g_t [B, S], q_t [B, D]
  std::vector<torch::Tensor> weights, context_grads;  // a_t [B, S], dc_t [B, D']
};

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Steps = AttentionSource::Steps;

/// The steps' record in an autograd context (saved_data holds IValues).
struct StepsCapsule : torch::CustomClassHolder {
  explicit StepsCapsule(std::shared_ptr<Steps> s) : steps(std::move(s)) {}
  std::shared_ptr<Steps> steps;
};

void save_steps(AutogradContext* ctx, std::shared_ptr<Steps> steps) {
  ctx->saved_data["steps"] = c10::IValue::make_capsule(c10::make_intrusive<StepsCapsule>(std::move(steps)));
}

std::shared_ptr<Steps> saved_steps(AutogradContext* ctx) {
  auto capsule = ctx->saved_data["steps"].toCapsule();
  return static_cast<StepsCapsule*>(capsule.get())->steps;
}

/// Σ_t x_t[b]ᵀ y_t[b] over the steps: x_t [B, S], y_t [B, D] -> [B, S, D].
torch::Tensor sum_of_outer_products(const std::vector<torch::Tensor>& x, const std::vector<torch::Tensor>& y) {
  return torch::bmm(torch::stack(x, 2), torch::stack(y, 1));
}

/// keys and memory, passed on; its backward forms their gradients from what
/// the steps left (AttentionSource in nn/attention.h).
class GatherSourceGradients : public torch::autograd::Function<GatherSourceGradients> {
 public:
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& keys, const torch::Tensor& memory,
                               std::shared_ptr<Steps> steps) {
    save_steps(ctx, std::move(steps));
    ctx->set_materialize_grads(false);  // the steps pass on no gradient of their own
    return {keys, memory};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto steps = saved_steps(ctx);
    std::lock_guard<std::mutex> lock(steps->mutex);
    auto gather = [](torch::Tensor grad, std::vector<torch::Tensor>& x, std::vector<torch::Tensor>& y) {
      if (!x.empty()) {
        auto sum = sum_of_outer_products(x, y);
        grad = grad.defined() ? sum.add_(grad) : sum;
      }
      x.clear();
      y.clear();
      return grad;
    };
    auto dkeys = gather(grads[0], steps->score_grads, steps->queries);
    auto dmemory = gather(grads[1], steps->weights, steps->context_grads);
    return {dkeys, dmemory, torch::Tensor()};
  }
};

/// scores_t = attention_scores(keys, q_t); backward: dq_t, and (g_t, q_t) left for the gathering node.
class StepScores : public torch::autograd::Function<StepScores> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& keys, const torch::Tensor& query,
                               std::shared_ptr<Steps> steps) {
    ctx->save_for_backward({keys, query});
    save_steps(ctx, std::move(steps));
    return attention_scores(keys, query);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& g = grads[0];
    torch::Tensor dquery;
    if (ctx->needs_input_grad(1)) dquery = attention_context(g, saved[0]);
    if (ctx->needs_input_grad(0)) {
      const auto steps = saved_steps(ctx);
      std::lock_guard<std::mutex> lock(steps->mutex);
      steps->score_grads.push_back(g);
      steps->queries.push_back(saved[1]);
    }
    return {torch::Tensor(), dquery, torch::Tensor()};
  }
};

/// context_t = attention_context(a_t, memory); backward: da_t, and (a_t, dc_t) left for the gathering node.
class StepContext : public torch::autograd::Function<StepContext> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& weights, const torch::Tensor& memory,
                               std::shared_ptr<Steps> steps) {
    ctx->save_for_backward({weights, memory});
    save_steps(ctx, std::move(steps));
    return attention_context(weights, memory);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& dc = grads[0];
    torch::Tensor dweights;
    if (ctx->needs_input_grad(0)) dweights = attention_scores(saved[1], dc);
    if (ctx->needs_input_grad(1)) {
      const auto steps = saved_steps(ctx);
      std::lock_guard<std::mutex> lock(steps->mutex);
      steps->weights.push_back(saved[0]);
      steps->context_grads.push_back(dc);
    }
    return {dweights, torch::Tensor(), torch::Tensor()};
  }
};

bool records(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad());
}

}  // namespace

AttentionSource::AttentionSource(const torch::Tensor& keys, const torch::Tensor& memory) {
  TORCH_CHECK(keys.dim() == 3 && memory.dim() == 3 && keys.size(0) == memory.size(0) &&
                  keys.size(1) == memory.size(1),
              "AttentionSource: expected keys [B, S, D] and memory [B, S, D'], got ", keys.sizes(), " and ",
              memory.sizes());
  if (!records(keys, memory)) {
    keys_ = keys;
    memory_ = memory;
    return;
  }
  steps_ = std::make_shared<Steps>();
  auto passed = GatherSourceGradients::apply(keys, memory, steps_);
  keys_ = passed[0];
  memory_ = passed[1];
}

torch::Tensor AttentionSource::scores(const torch::Tensor& query) const {
  TORCH_CHECK(keys_.defined(), "AttentionSource::scores: no keys (a default-constructed source)");
  // Either way attention_scores (attention_context below) checks the shapes.
  if (steps_ == nullptr || !records(keys_, query)) return attention_scores(keys_, query);
  return StepScores::apply(keys_, query, steps_);
}

torch::Tensor AttentionSource::context(const torch::Tensor& weights) const {
  TORCH_CHECK(memory_.defined(), "AttentionSource::context: no memory (a default-constructed source)");
  if (steps_ == nullptr || !records(weights, memory_)) return attention_context(weights, memory_);
  return StepContext::apply(weights, memory_, steps_);
}

}  // namespace cellstate
