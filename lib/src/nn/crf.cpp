#include "cellstate/nn/crf.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <torch/torch.h>

#include <cmath>

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

std::vector<std::vector<int64_t>> CRFImpl::viterbi(const torch::Tensor& e_in, const torch::Tensor& mask,
                                                   std::vector<double>* best_scores) const {
  check(e_in, mask);
  torch::NoGradGuard g;
  const auto e = e_in.detach();
  const auto A = effective_transitions().detach().unsqueeze(0);
  auto score = effective_start().detach().unsqueeze(0) + e.select(1, 0);
  std::vector<torch::Tensor> history;
  for (int64_t t = 1; t < e.size(1); ++t) {
    auto [best, from] = (score.unsqueeze(2) + A).max(1);
    history.push_back(from);
    score = torch::where(mask.select(1, t).unsqueeze(1), best + e.select(1, t), score);
  }
  auto [final_score, last] = (score + effective_end().detach().unsqueeze(0)).max(1);
  const auto lengths = mask.sum(1);
  std::vector<std::vector<int64_t>> paths(static_cast<size_t>(e.size(0)));
  if (best_scores) best_scores->assign(static_cast<size_t>(e.size(0)), 0.0);
  for (int64_t b = 0; b < e.size(0); ++b) {
    const int64_t n = lengths[b].item<int64_t>();
    std::vector<int64_t> path(static_cast<size_t>(n));
    int64_t tag = last[b].item<int64_t>();
    path[static_cast<size_t>(n - 1)] = tag;
    for (int64_t t = n - 1; t >= 1; --t) {
      tag = history[static_cast<size_t>(t - 1)][b][tag].item<int64_t>();
      path[static_cast<size_t>(t - 1)] = tag;
    }
    paths[static_cast<size_t>(b)] = std::move(path);
    if (best_scores) (*best_scores)[static_cast<size_t>(b)] = final_score[b].item<double>();
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

std::vector<double> CRFImpl::span_probabilities(const torch::Tensor& e_all, const torch::Tensor& mask,
                                                const std::vector<SpanQuery>& queries) const {
  std::vector<double> out;
  if (queries.empty()) return out;
  torch::NoGradGuard g;
  const auto e = e_all.detach().to(torch::kDouble).contiguous();
  auto [alpha_t, beta_t] = forward_backward(e, mask);
  alpha_t = alpha_t.contiguous();
  beta_t = beta_t.contiguous();
  const auto A_t = effective_transitions().detach().to(torch::kDouble).contiguous();
  const auto s_t = effective_start().detach().to(torch::kDouble).contiguous();
  const auto f_t = effective_end().detach().to(torch::kDouble).contiguous();
  const auto z_t = log_partition(e, mask).contiguous();
  const auto n_t = mask.sum(1).to(torch::kInt64).contiguous();
  const auto ea = e.accessor<double, 3>();
  const auto alpha = alpha_t.accessor<double, 3>();
  const auto beta = beta_t.accessor<double, 3>();
  const auto A = A_t.accessor<double, 2>();
  const auto s = s_t.accessor<double, 1>();
  const auto f = f_t.accessor<double, 1>();
  const auto z = z_t.accessor<double, 1>();
  const auto n_of = n_t.accessor<int64_t, 1>();
  const int64_t K = e.size(2);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  auto log_add = [](double a, double b) {
    if (a == -std::numeric_limits<double>::infinity()) return b;
    if (b == -std::numeric_limits<double>::infinity()) return a;
    const double m = std::max(a, b);
    return m + std::log(std::exp(a - m) + std::exp(b - m));
  };
  for (const auto& q : queries) {
    const int64_t b = q.batch, start = q.start, n = n_of[b];
    const auto len = static_cast<int64_t>(q.tags.size());
    TORCH_CHECK(b >= 0 && b < e.size(0) && len >= 1 && start >= 0 && start + len <= n,
                "CRF::span_probabilities: span [", start, ", ", start + len, ") outside sentence ", b, " of ", n,
                " tokens");
    const int64_t first = q.tags.front();
    double logp = neg_inf;
    if (start == 0) {
      logp = s[first];
    } else {
      for (int64_t k = 0; k < K; ++k) logp = log_add(logp, alpha[b][start - 1][k] + A[k][first]);
    }
    logp += ea[b][start][first];
    for (int64_t k = 1; k < len; ++k)
      logp += A[q.tags[static_cast<size_t>(k - 1)]][q.tags[static_cast<size_t>(k)]] +
              ea[b][start + k][q.tags[static_cast<size_t>(k)]];
    const int64_t end = start + len - 1;
    const int64_t last = q.tags.back();
    if (end == n - 1) {
      logp += f[last];
    } else {
      double next = neg_inf;
      for (int64_t j = 0; j < K; ++j) {
        if (std::find(q.not_next.begin(), q.not_next.end(), j) != q.not_next.end()) continue;
        next = log_add(next, A[last][j] + ea[b][end + 1][j] + beta[b][end + 1][j]);
      }
      logp += next;
    }
    out.push_back(std::exp(logp - z[b]));
  }
  return out;
}

}  // namespace cellstate
