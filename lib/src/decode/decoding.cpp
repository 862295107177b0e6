#include "cellstate/decode/decoding.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>

#include "cellstate/util/random.h"

namespace cellstate {

void DecodingOptions::validate() const {
  if (beam < 1) throw std::invalid_argument("--beam must be >= 1, got " + std::to_string(beam));
  if (nbest < 1 || nbest > beam)
    throw std::invalid_argument("--nbest must be in [1, --beam], got " + std::to_string(nbest));
  if (!(length_penalty >= 0)) throw std::invalid_argument("--length-penalty must be >= 0");
  if (!(max_length_ratio > 0)) throw std::invalid_argument("--max-length-ratio must be > 0");
  if (min_length < 0) throw std::invalid_argument("--min-length must be >= 0");
  sampling.validate();
  if (sample && nbest > 1)
    throw std::invalid_argument("--sample draws one hypothesis per sentence: --nbest must be 1, got " +
                                std::to_string(nbest));
  const SamplingOptions plain;
  if (!sample && (sampling.top_k != plain.top_k || sampling.top_p != plain.top_p ||
                  sampling.temperature != plain.temperature ||
                  sampling.repetition_penalty != plain.repetition_penalty))
    throw std::invalid_argument(
        "--temperature, --top-k, --top-p and --repetition-penalty apply only with --sample");
}

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

double normalised(double log_prob, size_t length, double alpha) {
  if (alpha == 0) return log_prob;
  return log_prob / std::pow((5.0 + static_cast<double>(length)) / 6.0, alpha);
}

/// A live prefix.
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

/// What one step of a search sees of input b, and what it may do: continue
/// a row with a token (at most K per step) or finish it.
struct Expansion {
  int64_t b = 0;
  int64_t K = 1;
  const torch::Tensor& logp;        // [B*K, V] double
  const std::vector<Row>& alive;    // [B*K]
  std::function<void(int64_t parent, int64_t token, double log_prob)> keep;
  std::function<void(int64_t parent, int64_t token, double log_prob)> end;  // token is eos
  const int64_t& kept;              // rows kept so far for b
};

/// The search loop shared by beam search and sampling: K rows per input,
/// `expand` chooses the continuations of input b at each step.
std::vector<std::vector<Hypothesis>> run_search(StepModel& model, const std::vector<int64_t>& source_lengths,
                                                const DecodingOptions& options, int64_t K, int64_t bos, int64_t eos,
                                                const std::function<void(Expansion&)>& expand) {
  options.validate();
  torch::NoGradGuard no_grad;
  const auto B = static_cast<int64_t>(source_lengths.size());
  std::vector<int64_t> max_len;
  for (auto s : source_lengths)
    max_len.push_back(static_cast<int64_t>(std::ceil(options.max_length_ratio * static_cast<double>(s))) + 10);

  // Rows b*K .. b*K+K-1 belong to input b; only row b*K is alive at first.
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
    auto logp = torch::log_softmax(model.logits(previous, &attention), 1).to(torch::kDouble).contiguous();
    if (t < options.min_length) logp.select(1, eos).fill_(kNegInf);
    std::vector<Row> next(static_cast<size_t>(B * K));
    std::vector<int64_t> parents(static_cast<size_t>(B * K)), tokens(static_cast<size_t>(B * K), eos);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t k = 0; k < K; ++k) parents[static_cast<size_t>(b * K + k)] = b * K;
      if (done[static_cast<size_t>(b)]) continue;
      int64_t kept = 0;
      Expansion e{b, K, logp, alive, {}, {}, kept};
      e.keep = [&](int64_t parent, int64_t token, double log_prob) {
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
      e.end = [&](int64_t parent, int64_t /*eos*/, double log_prob) {
        Row ended = alive[static_cast<size_t>(parent)];
        if (attention.defined()) ended.attention.push_back(row_of(attention, parent));
        finish(b, ended, log_prob, true);
      };
      expand(e);
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

}  // namespace

std::vector<std::vector<Hypothesis>> beam_search(StepModel& model, const std::vector<int64_t>& source_lengths,
                                                 const DecodingOptions& options, int64_t bos, int64_t eos) {
  const int64_t K = options.beam;
  return run_search(model, source_lengths, options, K, bos, eos, [&](Expansion& e) {
    // The 2K best continuations of the input's K beams.
    const int64_t V = e.logp.size(1);
    auto total = e.logp.slice(0, e.b * K, (e.b + 1) * K);
    std::vector<double> base;
    for (int64_t k = 0; k < K; ++k) base.push_back(e.alive[static_cast<size_t>(e.b * K + k)].log_prob);
    total = total + torch::tensor(base, torch::kDouble).unsqueeze(1);
    const auto top = total.reshape(-1).topk(std::min<int64_t>(2 * K, K * V));
    const auto values = std::get<0>(top).contiguous(), indices = std::get<1>(top).contiguous();
    for (int64_t i = 0; i < values.size(0) && e.kept < K; ++i) {
      const double v = values[i].item<double>();
      if (v == kNegInf) break;
      const int64_t index = indices[i].item<int64_t>();
      const int64_t parent = e.b * K + index / V, token = index % V;
      if (token == eos) e.end(parent, token, v);
      else e.keep(parent, token, v);
    }
  });
}

std::vector<std::vector<Hypothesis>> sample_search(StepModel& model, const std::vector<int64_t>& source_lengths,
                                                   const DecodingOptions& options, int64_t bos, int64_t eos) {
  DecodingOptions one = options;
  one.beam = 1;
  one.nbest = 1;
  std::vector<Sampler> samplers;
  for (size_t b = 0; b < source_lengths.size(); ++b)
    samplers.emplace_back(options.sampling, derive_seed(options.seed, static_cast<uint64_t>(b)));
  return run_search(model, source_lengths, one, 1, bos, eos, [&](Expansion& e) {
    const int64_t parent = e.b;
    const int64_t token = samplers[static_cast<size_t>(e.b)].next(e.logp[parent]);
    const double lp = e.alive[static_cast<size_t>(parent)].log_prob + e.logp[parent][token].item<double>();
    if (token == eos) e.end(parent, token, lp);
    else e.keep(parent, token, lp);
  });
}

std::vector<std::vector<Hypothesis>> decode(StepModel& model, const std::vector<int64_t>& source_lengths,
                                            const DecodingOptions& options, int64_t bos, int64_t eos) {
  return options.sample ? sample_search(model, source_lengths, options, bos, eos)
                        : beam_search(model, source_lengths, options, bos, eos);
}

}  // namespace cellstate
