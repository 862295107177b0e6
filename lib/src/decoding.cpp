#include "cellstate/decoding.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "cellstate/batching.h"
#include "cellstate/sampling.h"

namespace cellstate {

void DecodingOptions::validate() const {
  if (beam < 1) throw std::invalid_argument("--beam must be >= 1, got " + std::to_string(beam));
  if (nbest < 1 || nbest > beam)
    throw std::invalid_argument("--nbest must be in [1, --beam], got " + std::to_string(nbest));
  if (!(length_penalty >= 0)) throw std::invalid_argument("--length-penalty must be >= 0");
  if (!(max_length_ratio > 0)) throw std::invalid_argument("--max-length-ratio must be > 0");
  if (min_length < 0) throw std::invalid_argument("--min-length must be >= 0");
  if (sample_topk < 0) throw std::invalid_argument("--sample-topk must be >= 0");
  if (!(temperature > 0)) throw std::invalid_argument("--temperature must be > 0");
}

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

double normalised(double log_prob, size_t length, double alpha) {
  if (alpha == 0) return log_prob;
  return log_prob / std::pow((5.0 + static_cast<double>(length)) / 6.0, alpha);
}

struct Row {
  std::vector<int64_t> tokens;
  std::vector<std::vector<float>> attention;
  double log_prob = kNegInf;
};

std::vector<float> row_of(const torch::Tensor& attention, int64_t r) {
  if (!attention.defined()) return {};
  auto a = attention[r].to(torch::kFloat).contiguous();
  return std::vector<float>(a.data_ptr<float>(), a.data_ptr<float>() + a.numel());
}

}  // namespace

std::vector<std::vector<Hypothesis>> decode(StepModel& model, const std::vector<int64_t>& source_lengths,
                                            const DecodingOptions& options, int64_t bos, int64_t eos) {
  options.validate();
  torch::NoGradGuard no_grad;
  const auto B = static_cast<int64_t>(source_lengths.size());
  const int64_t K = options.sample_topk > 0 ? 1 : options.beam;
  std::vector<int64_t> max_len;
  for (auto s : source_lengths)
    max_len.push_back(static_cast<int64_t>(std::ceil(options.max_length_ratio * static_cast<double>(s))) + 10);

  // Beams: rows b*K .. b*K+K-1 belong to input b; only row b*K is alive at first.
  {
    std::vector<int64_t> rows;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < K; ++k) rows.push_back(b);
    model.select(torch::tensor(rows, torch::kInt64));
  }
  std::vector<Row> alive(static_cast<size_t>(B * K));
  for (int64_t b = 0; b < B; ++b) alive[static_cast<size_t>(b * K)].log_prob = 0;
  std::vector<std::vector<Hypothesis>> finished(static_cast<size_t>(B));
  std::vector<char> done(static_cast<size_t>(B), 0);
  std::vector<Sampler> samplers;
  if (options.sample_topk > 0) {
    SamplingOptions so;
    so.top_k = options.sample_topk;
    so.temperature = options.temperature;
    for (int64_t b = 0; b < B; ++b) samplers.emplace_back(so, mix64(options.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(b)));
  }
  auto previous = torch::full({B * K}, bos, torch::kInt64);
  auto finish = [&](int64_t b, const Row& row, double log_prob, bool ended) {
    Hypothesis h;
    h.tokens = row.tokens;
    h.attention = row.attention;
    h.log_prob = log_prob;
    h.finished = ended;
    h.score = normalised(log_prob, row.tokens.size() + (ended ? 1 : 0), options.length_penalty);
    finished[static_cast<size_t>(b)].push_back(std::move(h));
  };

  for (int64_t t = 0;; ++t) {
    torch::Tensor attention;
    auto logp = model.log_probs(previous, &attention).to(torch::kDouble).contiguous();
    const int64_t V = logp.size(1);
    if (t < options.min_length) logp.select(1, eos).fill_(kNegInf);
    std::vector<Row> next(static_cast<size_t>(B * K));
    std::vector<int64_t> parents(static_cast<size_t>(B * K)), tokens(static_cast<size_t>(B * K), eos);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t k = 0; k < K; ++k) parents[static_cast<size_t>(b * K + k)] = b * K;
      if (done[static_cast<size_t>(b)]) continue;
      int64_t kept = 0;
      auto keep = [&](int64_t parent, int64_t token, double log_prob) {
        Row r = alive[static_cast<size_t>(parent)];
        r.tokens.push_back(token);
        if (attention.defined()) r.attention.push_back(row_of(attention, parent));
        r.log_prob = log_prob;
        const auto slot = static_cast<size_t>(b * K + kept);
        next[slot] = std::move(r);
        parents[slot] = parent;
        tokens[slot] = token;
        ++kept;
      };
      if (options.sample_topk > 0) {
        const int64_t parent = b * K;
        const auto& row = alive[static_cast<size_t>(parent)];
        const int64_t token = samplers[static_cast<size_t>(b)].next(logp[parent]);
        const double lp = row.log_prob + logp[parent][token].item<double>();
        if (token == eos) {
          Row ended = row;
          if (attention.defined()) ended.attention.push_back(row_of(attention, parent));
          finish(b, ended, lp, true);
        } else {
          keep(parent, token, lp);
        }
      } else {
        // The 2K best continuations of the input's K beams.
        auto total = logp.slice(0, b * K, (b + 1) * K);
        std::vector<double> base;
        for (int64_t k = 0; k < K; ++k) base.push_back(alive[static_cast<size_t>(b * K + k)].log_prob);
        total = total + torch::tensor(base, torch::kDouble).unsqueeze(1);
        const auto top = total.reshape(-1).topk(std::min<int64_t>(2 * K, K * V));
        const auto values = std::get<0>(top).contiguous(), indices = std::get<1>(top).contiguous();
        for (int64_t i = 0; i < values.size(0) && kept < K; ++i) {
          const double v = values[i].item<double>();
          if (v == kNegInf) break;
          const int64_t index = indices[i].item<int64_t>();
          const int64_t parent = b * K + index / V, token = index % V;
          if (token == eos) {
            Row ended = alive[static_cast<size_t>(parent)];
            if (attention.defined()) ended.attention.push_back(row_of(attention, parent));
            finish(b, ended, v, true);
          } else {
            keep(parent, token, v);
          }
        }
      }
      const bool enough = static_cast<int64_t>(finished[static_cast<size_t>(b)].size()) >= K;
      if (enough || kept == 0) {
        done[static_cast<size_t>(b)] = 1;
      } else if (t + 1 >= max_len[static_cast<size_t>(b)]) {
        // The length limit: what is alive ends here.
        for (int64_t k = 0; k < kept; ++k) {
          const auto& r = next[static_cast<size_t>(b * K + k)];
          finish(b, r, r.log_prob, false);
        }
        done[static_cast<size_t>(b)] = 1;
      }
    }
    if (std::all_of(done.begin(), done.end(), [](char d) { return d != 0; })) break;
    model.select(torch::tensor(parents, torch::kInt64));
    previous = torch::tensor(tokens, torch::kInt64);
    alive = std::move(next);
  }
  for (auto& f : finished) {
    std::stable_sort(f.begin(), f.end(), [](const Hypothesis& a, const Hypothesis& b) { return a.score > b.score; });
    if (static_cast<int64_t>(f.size()) > options.nbest) f.resize(static_cast<size_t>(options.nbest));
  }
  return finished;
}

}  // namespace cellstate
