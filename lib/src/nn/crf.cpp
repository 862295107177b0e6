#include "cellstate/nn/crf.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/Parallel.h>
#include <torch/torch.h>

namespace cellstate {

namespace {

struct ParsedTag {
  char prefix;  // 'O', 'B', 'I', 'E', 'S'
  std::string type;
};

ParsedTag parse_tag(const std::string& tag) {
  if (tag == "O") return {'O', ""};
  if (tag.size() < 3 || tag[1] != '-' || std::string("BIES").find(tag[0]) == std::string::npos)
    throw std::invalid_argument("tag '" + tag + "' is neither O nor B-/I-/E-/S-TYPE");
  return {tag[0], tag.substr(2)};
}

/// The inference passes (Viterbi, span probabilities) as loops over plain
/// arrays of doubles, one sentence at a time: as LibTorch operations on
/// [B, K, K] tensors, one per step, their dispatch cost more than the
/// arithmetic (a third of NER's tagging time). The scores with the
/// constraints applied, and the emissions, in float64.
struct PlainScores {
  int64_t K = 0, T = 0;
  std::vector<double> A, s, f;  // A[i * K + j]: tag i then j
  torch::Tensor e_t;            // [B, T, K] float64, contiguous
  const double* e = nullptr;
  std::vector<int64_t> lengths;

  PlainScores(const CRFImpl& crf, const torch::Tensor& emissions, const torch::Tensor& mask)
      : PlainScores(crf.effective_transitions(), crf.effective_start(), crf.effective_end(), emissions, mask) {}
  PlainScores(const torch::Tensor& transitions, const torch::Tensor& start, const torch::Tensor& end,
              const torch::Tensor& emissions, const torch::Tensor& mask) {
    torch::NoGradGuard g;
    K = emissions.size(2);
    T = emissions.size(1);
    auto values = [](const torch::Tensor& t) {
      const auto d = t.detach().to(torch::kDouble).contiguous();
      return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
    };
    A = values(transitions);
    s = values(start);
    f = values(end);
    e_t = emissions.detach().to(torch::kDouble).contiguous();
    e = e_t.data_ptr<double>();
    const auto n = mask.sum(1).to(torch::kInt64).contiguous();
    lengths.assign(n.data_ptr<int64_t>(), n.data_ptr<int64_t>() + n.numel());
  }
  /// e[b, t, :]
  const double* emissions(int64_t b, int64_t t) const { return e + (b * T + t) * K; }
};

/// Forward and backward log-potentials of one sentence of n tokens (the
/// recurrences of CRFImpl::forward_backward), alpha and beta [n, K] each,
/// and log Z. Each step is a product with exp(A): with m the largest
/// alpha[t-1, k] and c_j the largest A[k, j] of column j,
///   alpha[t, j] = m + c_j + log sum_k exp(alpha[t-1, k] - m) exp(A[k, j] - c_j) + e[t, j],
/// so K exponentials and K logarithms a step instead of K^2; the backward
/// pass alike with the rows' maxima. A sum that underflows (every path
/// through forbidden transitions) gives -inf, where the tensor form keeps
/// about -10,000: no probability either way.
class ForwardBackward {
 public:
  explicit ForwardBackward(const PlainScores& c) : c_(c) {
    const auto K = static_cast<size_t>(c.K);
    col_max_.assign(K, -std::numeric_limits<double>::infinity());
    row_max_.assign(K, -std::numeric_limits<double>::infinity());
    for (size_t i = 0; i < K; ++i)
      for (size_t j = 0; j < K; ++j) {
        col_max_[j] = std::max(col_max_[j], c.A[i * K + j]);
        row_max_[i] = std::max(row_max_[i], c.A[i * K + j]);
      }
    by_column_.resize(K * K);
    by_row_.resize(K * K);
    for (size_t i = 0; i < K; ++i)
      for (size_t j = 0; j < K; ++j) {
        by_column_[i * K + j] = std::exp(c.A[i * K + j] - col_max_[j]);
        by_row_[i * K + j] = std::exp(c.A[i * K + j] - row_max_[i]);
      }
    p_.resize(K);
  }

  /// Sentence b: fills alpha() and beta(), returns log Z.
  double run(int64_t b) {
    const int64_t n = c_.lengths[static_cast<size_t>(b)], K = c_.K;
    alpha_.resize(static_cast<size_t>(n * K));
    beta_.resize(static_cast<size_t>(n * K));
    const double* e0 = c_.emissions(b, 0);
    for (int64_t j = 0; j < K; ++j) alpha_[j] = c_.s[j] + e0[j];
    for (int64_t t = 1; t < n; ++t) {
      const double* prev = &alpha_[(t - 1) * K];
      const double m = shifted_exp(prev);
      const double* et = c_.emissions(b, t);
      double* next = &alpha_[t * K];
      for (int64_t j = 0; j < K; ++j) next[j] = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double pk = p_[k];
        const double* row = &by_column_[k * K];
        for (int64_t j = 0; j < K; ++j) next[j] += pk * row[j];
      }
      for (int64_t j = 0; j < K; ++j) next[j] = m + col_max_[j] + std::log(next[j]) + et[j];
    }
    double* last = &beta_[(n - 1) * K];
    for (int64_t j = 0; j < K; ++j) last[j] = c_.f[j];
    for (int64_t t = n - 2; t >= 0; --t) {
      const double* after = &beta_[(t + 1) * K];
      const double* et = c_.emissions(b, t + 1);
      double* here = &beta_[t * K];
      for (int64_t j = 0; j < K; ++j) here[j] = et[j] + after[j];  // scratch, replaced below
      const double m = shifted_exp(here);
      for (int64_t i = 0; i < K; ++i) {
        const double* row = &by_row_[i * K];
        double sum = 0;
        for (int64_t j = 0; j < K; ++j) sum += row[j] * p_[j];
        here[i] = m + row_max_[i] + std::log(sum);
      }
    }
    const double* end = &alpha_[(n - 1) * K];
    for (int64_t j = 0; j < K; ++j) p_[j] = end[j] + c_.f[j];
    const double m = shifted_exp(p_.data());  // in place: log Z = m + log sum p_
    double sum = 0;
    for (int64_t j = 0; j < K; ++j) sum += p_[j];
    return m + std::log(sum);
  }

  /// exp(A[k, j] − c_j), row k; c_j the largest A[·, j].
  const double* exp_by_column(int64_t k) const { return &by_column_[static_cast<size_t>(k * c_.K)]; }
  double column_max(int64_t j) const { return col_max_[static_cast<size_t>(j)]; }

  /// alpha[t, :] and beta[t, :] of the last sentence run.
  const double* alpha(int64_t t) const { return &alpha_[static_cast<size_t>(t * c_.K)]; }
  const double* beta(int64_t t) const { return &beta_[static_cast<size_t>(t * c_.K)]; }

 private:
  /// p_ = exp(x - max x); returns max x (the exponentials of an all -inf x are
  /// 0). x may be p_ itself.
  double shifted_exp(const double* x) {
    const double m = *std::max_element(x, x + c_.K);
    const double shift = std::isfinite(m) ? m : 0;
    for (int64_t k = 0; k < c_.K; ++k) p_[static_cast<size_t>(k)] = std::exp(x[k] - shift);
    return shift;
  }

  const PlainScores& c_;
  std::vector<double> col_max_, row_max_, by_column_, by_row_, p_, alpha_, beta_;
};

/// log Z per sentence with its gradients, as the loops of ForwardBackward,
/// one sentence per task: the tensor recurrence (a logsumexp over [B, K, K]
/// and a where() per step, and their backward) took 5 ms of a 32 ms NER
/// training step at T = 40, the loops take a tenth of that. The gradients
/// are the marginals, all computed in forward:
///   ∂log Z/∂e[t, j] = P(y_t = j) = exp(alpha[t, j] + beta[t, j] − log Z)
///   ∂log Z/∂A[i, j] = Σ_{t≥1} P(y_{t−1} = i, y_t = j)
///                   = Σ_t exp(alpha[t−1, i] + A[i, j] + e[t, j] + beta[t, j] − log Z)
///   ∂log Z/∂s[j] = P(y_1 = j),   ∂log Z/∂f[j] = P(y_n = j).
/// A step's pair probabilities are a_i · exp(A[i, j] − c_j) · b_j (a, b the
/// shifted exponentials of alpha[t−1] and e[t] + beta[t] + c) divided by
/// their sum, which is 1 in exact arithmetic: K² products, not K²
/// exponentials.
class LogPartitionFunction : public torch::autograd::Function<LogPartitionFunction> {
 public:
  /// e [B, T, K], A [K, K], s [K], f [K] (with the constraints applied), mask
  /// [B, T] -> log Z [B] in e's dtype.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& e,
                               const torch::Tensor& A, const torch::Tensor& s, const torch::Tensor& f,
                               const torch::Tensor& mask) {
    const PlainScores c(A, s, f, e, mask);
    const int64_t B = e.size(0), T = c.T, K = c.K;
    const bool grads = ctx != nullptr;
    auto log_z = torch::empty({B}, torch::kDouble);
    torch::Tensor marg, pairs;
    if (grads) {
      marg = torch::zeros({B, T, K}, torch::kDouble);
      pairs = torch::zeros({B, K, K}, torch::kDouble);
    }
    double* z = log_z.data_ptr<double>();
    double* m = grads ? marg.data_ptr<double>() : nullptr;
    double* pp = grads ? pairs.data_ptr<double>() : nullptr;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      ForwardBackward fb(c);
      std::vector<double> a(static_cast<size_t>(K)), b(static_cast<size_t>(K)), term(static_cast<size_t>(K * K));
      for (int64_t i = begin; i < end; ++i) {
        z[i] = fb.run(i);
        if (!grads) continue;
        const int64_t n = c.lengths[static_cast<size_t>(i)];
        for (int64_t t = 0; t < n; ++t)
          for (int64_t j = 0; j < K; ++j) m[(i * T + t) * K + j] = std::exp(fb.alpha(t)[j] + fb.beta(t)[j] - z[i]);
        double* pair = pp + i * K * K;
        for (int64_t t = 1; t < n; ++t) {
          const double* alpha = fb.alpha(t - 1);
          const double* beta = fb.beta(t);
          const double* et = c.emissions(i, t);
          const double ma = *std::max_element(alpha, alpha + K);
          double mb = -std::numeric_limits<double>::infinity();
          for (int64_t j = 0; j < K; ++j) mb = std::max(mb, b[j] = et[j] + beta[j] + fb.column_max(j));
          for (int64_t k = 0; k < K; ++k) a[k] = std::exp(alpha[k] - ma);
          for (int64_t j = 0; j < K; ++j) b[j] = std::exp(b[j] - mb);
          double sum = 0;
          for (int64_t k = 0; k < K; ++k) {
            const double* row = fb.exp_by_column(k);
            for (int64_t j = 0; j < K; ++j) sum += term[k * K + j] = a[k] * row[j] * b[j];
          }
          if (sum > 0 && std::isfinite(sum) && std::isfinite(ma) && std::isfinite(mb)) {
            for (int64_t x = 0; x < K * K; ++x) pair[x] += term[x] / sum;
          } else {  // every product underflowed: the exponentials one by one
            for (int64_t k = 0; k < K; ++k)
              for (int64_t j = 0; j < K; ++j)
                pair[k * K + j] += std::exp(alpha[k] + c.A[k * K + j] + et[j] + beta[j] - z[i]);
          }
        }
      }
    });
    if (grads) {
      const auto lengths = torch::tensor(c.lengths, torch::kInt64);
      ctx->saved_data["marg"] = marg;
      ctx->saved_data["pairs"] = pairs;
      ctx->saved_data["last"] = (lengths - 1).clamp_min(0);
    }
    return log_z.to(e.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto marg = ctx->saved_data["marg"].toTensor();    // [B, T, K]
    const auto pairs = ctx->saved_data["pairs"].toTensor();  // [B, K, K]
    const auto last = ctx->saved_data["last"].toTensor();    // [B]
    const auto g = grad_out[0].to(torch::kDouble);           // [B]
    const auto B = marg.size(0), K = marg.size(2);
    const auto type = grad_out[0].scalar_type();
    const auto grad_e = (marg * g.view({B, 1, 1})).to(type);
    const auto grad_a = (pairs * g.view({B, 1, 1})).sum(0).to(type);
    const auto grad_s = (marg.select(1, 0) * g.view({B, 1})).sum(0).to(type);
    const auto at_end = marg.gather(1, last.view({B, 1, 1}).expand({B, 1, K})).squeeze(1);
    const auto grad_f = (at_end * g.view({B, 1})).sum(0).to(type);
    return {grad_e, grad_a, grad_s, grad_f, torch::Tensor()};
  }
};

}  // namespace

TagConstraints tag_constraints(const std::vector<std::string>& tags, TagScheme scheme) {
  const size_t k = tags.size();
  std::vector<ParsedTag> p;
  for (const auto& t : tags) {
    p.push_back(parse_tag(t));
    if (scheme != TagScheme::kIOBES && (p.back().prefix == 'E' || p.back().prefix == 'S'))
      throw std::invalid_argument("tag '" + t + "' is IOBES, but the scheme is " + to_string(scheme));
  }
  TagConstraints c;
  c.transition.assign(k, std::vector<bool>(k, true));
  c.start.assign(k, true);
  c.end.assign(k, true);
  for (size_t j = 0; j < k; ++j) {
    const auto& to = p[j];
    for (size_t i = 0; i < k; ++i) {
      const auto& from = p[i];
      const bool same = from.type == to.type && from.prefix != 'O';
      bool ok = true;
      switch (scheme) {
        case TagScheme::kIOB2:  // I-X continues B-X or I-X
          if (to.prefix == 'I') ok = same && (from.prefix == 'B' || from.prefix == 'I');
          break;
        case TagScheme::kIOB1:  // B-X only right after an entity of type X
          if (to.prefix == 'B') ok = same && (from.prefix == 'B' || from.prefix == 'I');
          break;
        case TagScheme::kIOBES:
          if (from.prefix == 'B' || from.prefix == 'I')
            ok = same && (to.prefix == 'I' || to.prefix == 'E');
          else
            ok = to.prefix == 'O' || to.prefix == 'B' || to.prefix == 'S';
          break;
      }
      c.transition[i][j] = ok;
    }
    switch (scheme) {
      case TagScheme::kIOB2: c.start[j] = to.prefix != 'I'; break;
      case TagScheme::kIOB1: c.start[j] = to.prefix != 'B'; break;
      case TagScheme::kIOBES:
        c.start[j] = to.prefix == 'O' || to.prefix == 'B' || to.prefix == 'S';
        c.end[j] = to.prefix == 'O' || to.prefix == 'E' || to.prefix == 'S';
        break;
    }
  }
  return c;
}

CRFImpl::CRFImpl(CRFOptions options_) : options(options_) { reset(); }

void CRFImpl::reset() {
  const int64_t k = options.num_tags();
  TORCH_CHECK(k >= 1, "CRF: num_tags must be >= 1, got ", k);
  transitions = register_parameter("transitions", torch::empty({k, k}).uniform_(-0.1, 0.1));
  start_transitions = register_parameter("start_transitions", torch::empty({k}).uniform_(-0.1, 0.1));
  end_transitions = register_parameter("end_transitions", torch::empty({k}).uniform_(-0.1, 0.1));
  allowed = register_buffer("allowed", torch::ones({k, k}, torch::kBool));
  allowed_start = register_buffer("allowed_start", torch::ones({k}, torch::kBool));
  allowed_end = register_buffer("allowed_end", torch::ones({k}, torch::kBool));
}

void CRFImpl::set_constraints(const TagConstraints& c) {
  const int64_t k = options.num_tags();
  TORCH_CHECK(static_cast<int64_t>(c.transition.size()) == k && static_cast<int64_t>(c.start.size()) == k &&
                  static_cast<int64_t>(c.end.size()) == k,
              "CRF::set_constraints: expected constraints for ", k, " tags");
  torch::NoGradGuard g;
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) allowed[i][j] = static_cast<bool>(c.transition[i][j]);
    allowed_start[i] = static_cast<bool>(c.start[i]);
    allowed_end[i] = static_cast<bool>(c.end[i]);
  }
}

torch::Tensor CRFImpl::effective_transitions() const {
  return transitions.masked_fill(~allowed.to(torch::kBool), kForbidden);
}
torch::Tensor CRFImpl::effective_start() const {
  return start_transitions.masked_fill(~allowed_start.to(torch::kBool), kForbidden);
}
torch::Tensor CRFImpl::effective_end() const { return end_transitions.masked_fill(~allowed_end.to(torch::kBool), kForbidden); }

void CRFImpl::check(const torch::Tensor& emissions, const torch::Tensor& mask) const {
  TORCH_CHECK(emissions.dim() == 3 && emissions.size(2) == options.num_tags(),
              "CRF: expected emissions [batch, time, ", options.num_tags(), "], got ", emissions.sizes());
  TORCH_CHECK(emissions.size(1) >= 1, "CRF: expected at least one time step");
  TORCH_CHECK(mask.dim() == 2 && mask.size(0) == emissions.size(0) && mask.size(1) == emissions.size(1),
              "CRF: expected mask [", emissions.size(0), ", ", emissions.size(1), "], got ", mask.sizes());
  TORCH_CHECK(mask.scalar_type() == torch::kBool, "CRF: expected a bool mask, got ", mask.scalar_type());
  TORCH_CHECK(mask.select(1, 0).all().item<bool>(), "CRF: every sentence needs at least one token (mask[:, 0])");
}

torch::Tensor CRFImpl::log_partition(const torch::Tensor& e, const torch::Tensor& mask) const {
  check(e, mask);
  const auto A = effective_transitions(), s = effective_start(), f = effective_end();
  if (!torch::GradMode::is_enabled() || !(e.requires_grad() || A.requires_grad() || s.requires_grad() || f.requires_grad()))
    return LogPartitionFunction::forward(nullptr, e, A, s, f, mask);
  return LogPartitionFunction::apply(e, A, s, f, mask);
}

torch::Tensor CRFImpl::log_partition_tensors(const torch::Tensor& e, const torch::Tensor& mask) const {
  check(e, mask);
  const auto A = effective_transitions().unsqueeze(0);  // [1, K, K]
  auto alpha = effective_start().unsqueeze(0) + e.select(1, 0);
  for (int64_t t = 1; t < e.size(1); ++t) {
    auto next = torch::logsumexp(alpha.unsqueeze(2) + A, 1) + e.select(1, t);
    alpha = torch::where(mask.select(1, t).unsqueeze(1), next, alpha);
  }
  return torch::logsumexp(alpha + effective_end().unsqueeze(0), 1);
}

torch::Tensor CRFImpl::score(const torch::Tensor& e, const torch::Tensor& tags, const torch::Tensor& mask) const {
  check(e, mask);
  TORCH_CHECK(tags.sizes() == mask.sizes(), "CRF: expected tags ", mask.sizes(), ", got ", tags.sizes());
  const auto safe = tags.masked_fill(~mask, 0);
  const auto m = mask.to(e.dtype());
  auto total = effective_start().index_select(0, safe.select(1, 0));
  total = total + (e.gather(2, safe.unsqueeze(2)).squeeze(2) * m).sum(1);
  if (e.size(1) > 1) {
    const auto A = effective_transitions();
    const auto prev = safe.slice(1, 0, -1), next = safe.slice(1, 1);
    const auto trans = A.index({prev.reshape({-1}), next.reshape({-1})}).view(prev.sizes());
    total = total + (trans * m.slice(1, 1)).sum(1);
  }
  const auto lengths = mask.sum(1);
  const auto last = safe.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1);
  return total + effective_end().index_select(0, last);
}

torch::Tensor CRFImpl::neg_log_likelihood(const torch::Tensor& e, const torch::Tensor& tags,
                                          const torch::Tensor& mask) const {
  return log_partition(e, mask) - score(e, tags, mask);
}

std::vector<std::vector<int64_t>> CRFImpl::viterbi(const torch::Tensor& e, const torch::Tensor& mask,
                                                   std::vector<double>* best_scores) const {
  check(e, mask);
  const PlainScores c(*this, e, mask);
  const int64_t B = e.size(0), K = c.K;
  std::vector<std::vector<int64_t>> paths(static_cast<size_t>(B));
  if (best_scores) best_scores->assign(static_cast<size_t>(B), 0.0);
  std::vector<double> score(static_cast<size_t>(K)), next(static_cast<size_t>(K));
  std::vector<int64_t> from;  // from[t * K + j]: the best tag before j at t
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = c.lengths[static_cast<size_t>(b)];
    from.assign(static_cast<size_t>(n * K), 0);
    const double* e0 = c.emissions(b, 0);
    for (int64_t j = 0; j < K; ++j) score[j] = c.s[j] + e0[j];
    for (int64_t t = 1; t < n; ++t) {
      const double* et = c.emissions(b, t);
      for (int64_t j = 0; j < K; ++j) {
        double best = score[0] + c.A[j];
        int64_t arg = 0;
        for (int64_t k = 1; k < K; ++k) {
          const double v = score[k] + c.A[k * K + j];
          if (v > best) best = v, arg = k;  // the first of equals, as max() picks
        }
        next[j] = best + et[j];
        from[t * K + j] = arg;
      }
      std::swap(score, next);
    }
    int64_t tag = 0;
    double best = score[0] + c.f[0];
    for (int64_t j = 1; j < K; ++j)
      if (score[j] + c.f[j] > best) best = score[j] + c.f[j], tag = j;
    std::vector<int64_t> path(static_cast<size_t>(n));
    for (int64_t t = n - 1; t >= 0; --t) {
      path[static_cast<size_t>(t)] = tag;
      if (t > 0) tag = from[t * K + tag];
    }
    paths[static_cast<size_t>(b)] = std::move(path);
    if (best_scores) (*best_scores)[static_cast<size_t>(b)] = best;
  }
  return paths;
}

std::pair<torch::Tensor, torch::Tensor> CRFImpl::forward_backward(const torch::Tensor& e,
                                                                  const torch::Tensor& mask) const {
  check(e, mask);
  const int64_t T = e.size(1);
  const auto A = effective_transitions();
  const auto f = effective_end().unsqueeze(0).expand({e.size(0), -1});
  const auto lengths = mask.sum(1);
  std::vector<torch::Tensor> alphas, betas(static_cast<size_t>(T));
  alphas.push_back(effective_start().unsqueeze(0) + e.select(1, 0));
  for (int64_t t = 1; t < T; ++t) {
    auto next = torch::logsumexp(alphas.back().unsqueeze(2) + A.unsqueeze(0), 1) + e.select(1, t);
    alphas.push_back(torch::where(mask.select(1, t).unsqueeze(1), next, alphas.back()));
  }
  betas[static_cast<size_t>(T - 1)] = f;
  for (int64_t t = T - 2; t >= 0; --t) {
    const auto& after = betas[static_cast<size_t>(t + 1)];
    auto inner = torch::logsumexp(A.unsqueeze(0) + (e.select(1, t + 1) + after).unsqueeze(1), 2);
    const auto inside = (lengths - 1 > t).unsqueeze(1);
    betas[static_cast<size_t>(t)] = torch::where(inside, inner, f);
  }
  return {torch::stack(alphas, 1), torch::stack(betas, 1)};
}

torch::Tensor CRFImpl::marginals(const torch::Tensor& e, const torch::Tensor& mask) const {
  auto [alpha, beta] = forward_backward(e, mask);
  const auto log_z = log_partition(e, mask).view({-1, 1, 1});
  return torch::exp(alpha + beta - log_z) * mask.unsqueeze(2).to(e.dtype());
}

double CRFImpl::segment_probability(const torch::Tensor& e_all, const torch::Tensor& mask_all, int64_t b,
                                    int64_t start, const std::vector<int64_t>& segment,
                                    const std::vector<int64_t>& not_next) const {
  return span_probabilities(e_all, mask_all, {SpanQuery{b, start, segment, not_next}}).front();
}

std::vector<double> CRFImpl::span_probabilities(const torch::Tensor& e, const torch::Tensor& mask,
                                                const std::vector<SpanQuery>& queries) const {
  std::vector<double> out(queries.size());
  if (queries.empty()) return out;
  check(e, mask);
  const PlainScores c(*this, e, mask);
  const int64_t K = c.K;
  for (const auto& q : queries) {
    const int64_t b = q.batch;
    const auto len = static_cast<int64_t>(q.tags.size());
    TORCH_CHECK(b >= 0 && b < e.size(0), "CRF::span_probabilities: no sentence ", b, " in a batch of ", e.size(0));
    const int64_t n = c.lengths[static_cast<size_t>(b)];
    TORCH_CHECK(len >= 1 && q.start >= 0 && q.start + len <= n, "CRF::span_probabilities: span [", q.start, ", ",
                q.start + len, ") outside sentence ", b, " of ", n, " tokens");
    for (const auto& tags : {q.tags, q.not_next})
      for (const int64_t t : tags)
        TORCH_CHECK(t >= 0 && t < K, "CRF::span_probabilities: expected tags in [0, ", K, "), got ", t);
  }
  // Each sentence's forward-backward pass once, its spans in the order given.
  std::vector<size_t> order(queries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return queries[x].batch < queries[y].batch; });
  ForwardBackward fb(c);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  auto log_add = [neg_inf](double a, double b) {
    if (a == neg_inf) return b;
    if (b == neg_inf) return a;
    const double m = std::max(a, b);
    return m + std::log(std::exp(a - m) + std::exp(b - m));
  };
  int64_t current = -1;
  double log_z = 0;
  for (const size_t i : order) {
    const auto& q = queries[i];
    const int64_t b = q.batch, start = q.start, n = c.lengths[static_cast<size_t>(b)];
    if (b != current) log_z = fb.run(b), current = b;
    const auto len = static_cast<int64_t>(q.tags.size());
    auto tag = [&](int64_t k) { return q.tags[static_cast<size_t>(k)]; };
    const int64_t first = tag(0);
    double logp = neg_inf;
    if (start == 0) {
      logp = c.s[first];
    } else {
      const double* before = fb.alpha(start - 1);
      for (int64_t k = 0; k < K; ++k) logp = log_add(logp, before[k] + c.A[k * K + first]);
    }
    logp += c.emissions(b, start)[first];
    for (int64_t k = 1; k < len; ++k) logp += c.A[tag(k - 1) * K + tag(k)] + c.emissions(b, start + k)[tag(k)];
    const int64_t end = start + len - 1;
    const int64_t last = q.tags.back();
    if (end == n - 1) {
      logp += c.f[last];
    } else {
      double next = neg_inf;
      const double* e_after = c.emissions(b, end + 1);
      const double* beta = fb.beta(end + 1);
      for (int64_t j = 0; j < K; ++j) {
        if (std::find(q.not_next.begin(), q.not_next.end(), j) != q.not_next.end()) continue;
        next = log_add(next, c.A[last * K + j] + e_after[j] + beta[j]);
      }
      logp += next;
    }
    out[i] = std::exp(logp - log_z);
  }
  return out;
}

}  // namespace cellstate
