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

/// What one step of a search sees of one input, and what it may do:
/// continue a row with a token (at most K per step) or finish it. The input's
/// rows are slot*K .. slot*K+K-1 of this step's batch (inputs that are done
/// leave the batch).
struct Expansion {
  int64_t input = 0;                // which input (its index in the call)
  int64_t slot = 0;                 // its place among this step's inputs
  int64_t K = 1;
  const std::vector<Row>& alive;    // [n*K]
  std::function<void(int64_t parent, int64_t token, double log_prob)> keep;
  std::function<void(int64_t parent, int64_t token, double log_prob)> end;  // token is eos
  const int64_t& kept;              // rows kept so far for the input
};

/// The search loop shared by beam search and sampling: K rows per input,
/// `prepare` sees each step's logits [n*K, V] (float32) once, with the token
/// it must not choose (eos before min_length; -1: none), `expand` chooses
/// the continuations of one input.
std::vector<std::vector<Hypothesis>> run_search(
    StepModel& model, const std::vector<int64_t>& source_lengths, const DecodingOptions& options, int64_t K,
    int64_t bos, int64_t eos, const std::function<void(const torch::Tensor& logits, int64_t banned)>& prepare,
    const std::function<void(Expansion&)>& expand) {
  options.validate();
  torch::NoGradGuard no_grad;
  const auto B = static_cast<int64_t>(source_lengths.size());
  std::vector<int64_t> max_len;
  for (auto s : source_lengths)
    max_len.push_back(static_cast<int64_t>(std::ceil(options.max_length_ratio * static_cast<double>(s))) + 10);

  // Rows s*K .. s*K+K-1 belong to the input active[s]; only row s*K is alive at first.
  std::vector<int64_t> active(static_cast<size_t>(B));
  {
    std::vector<int64_t> rows;
    for (int64_t b = 0; b < B; ++b) {
      active[static_cast<size_t>(b)] = b;
      for (int64_t k = 0; k < K; ++k) rows.push_back(b);
    }
    model.select(torch::tensor(rows, torch::kInt64));
  }
  std::vector<Row> alive(static_cast<size_t>(B * K));
  for (int64_t b = 0; b < B; ++b) alive[static_cast<size_t>(b * K)].log_prob = 0;
  std::vector<std::vector<Hypothesis>> finished(static_cast<size_t>(B));
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
    prepare(model.logits(previous, &attention).to(torch::kFloat), t < options.min_length ? eos : -1);
    const auto n = static_cast<int64_t>(active.size());
    std::vector<Row> next;
    std::vector<int64_t> parents, tokens, still;
    for (int64_t slot = 0; slot < n; ++slot) {
      const int64_t b = active[static_cast<size_t>(slot)];
      // This input's continuations go to rows of the next step's batch from `base` on.
      const auto base = static_cast<int64_t>(next.size());
      next.resize(static_cast<size_t>(base + K));
      parents.resize(static_cast<size_t>(base + K), slot * K);
      tokens.resize(static_cast<size_t>(base + K), eos);
      int64_t kept = 0;
      Expansion e{b, slot, K, alive, {}, {}, kept};
      e.keep = [&](int64_t parent, int64_t token, double log_prob) {
        Row r = alive[static_cast<size_t>(parent)];
        r.tokens.push_back(token);
        if (attention.defined()) r.attention.push_back(row_of(attention, parent));
        r.log_prob = log_prob;
        const auto row = static_cast<size_t>(base + kept);
        next[row] = std::move(r);
        parents[row] = parent;
        tokens[row] = token;
        ++kept;
      };
      e.end = [&](int64_t parent, int64_t /*eos*/, double log_prob) {
        Row ended = alive[static_cast<size_t>(parent)];
        if (attention.defined()) ended.attention.push_back(row_of(attention, parent));
        finish(b, ended, log_prob, true);
      };
      expand(e);
      bool done = static_cast<int64_t>(finished[static_cast<size_t>(b)].size()) >= K || kept == 0;
      if (!done && t + 1 >= max_len[static_cast<size_t>(b)]) {
        // The length limit: what is alive ends here.
        for (int64_t k = 0; k < kept; ++k) {
          const auto& r = next[static_cast<size_t>(base + k)];
          finish(b, r, r.log_prob, false);
        }
        done = true;
      }
      if (done) {  // the input leaves the batch
        next.resize(static_cast<size_t>(base));
        parents.resize(static_cast<size_t>(base));
        tokens.resize(static_cast<size_t>(base));
      } else {
        still.push_back(b);
      }
    }
    if (still.empty()) break;
    model.select(torch::tensor(parents, torch::kInt64));
    previous = torch::tensor(tokens, torch::kInt64);
    alive = std::move(next);
    active = std::move(still);
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
  // Each row's 2K best tokens, once per step: an input's 2K best continuations
  // over its K rows are among them.
  torch::Tensor top_values, top_tokens;
  auto prepare = [&](const torch::Tensor& logits, int64_t banned) {
    auto top = top_log_probs(logits, std::min<int64_t>(2 * K, logits.size(1)), banned);
    top_values = top.values;
    top_tokens = top.tokens;
  };
  struct Candidate {
    double value;
    int64_t parent, token;
  };
  std::vector<Candidate> candidates;
  return run_search(model, source_lengths, options, K, bos, eos, prepare, [&](Expansion& e) {
    // The 2K best continuations of the input's K rows, best first (ties: lower
    // row, then lower token).
    const int64_t per_row = top_values.size(1);
    const double* values = top_values.data_ptr<double>();
    const int64_t* tokens = top_tokens.data_ptr<int64_t>();
    candidates.clear();
    for (int64_t row = e.slot * K; row < (e.slot + 1) * K; ++row) {
      const double base = e.alive[static_cast<size_t>(row)].log_prob;
      if (base == kNegInf) continue;
      for (int64_t i = 0; i < per_row; ++i)
        candidates.push_back({base + values[row * per_row + i], row, tokens[row * per_row + i]});
    }
    const auto count = std::min<size_t>(candidates.size(), static_cast<size_t>(2 * K));
    std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(count), candidates.end(),
                      [](const Candidate& a, const Candidate& b) {
                        if (a.value != b.value) return a.value > b.value;
                        return a.parent != b.parent ? a.parent < b.parent : a.token < b.token;
                      });
    for (size_t i = 0; i < count && e.kept < K; ++i) {
      const auto& c = candidates[i];
      if (c.value == kNegInf) break;
      if (c.token == eos) e.end(c.parent, c.token, c.value);
      else e.keep(c.parent, c.token, c.value);
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
  torch::Tensor step_logp;  // [n, V] float: log-probabilities of the next token
  auto prepare = [&](const torch::Tensor& logits, int64_t banned) {
    step_logp = torch::log_softmax(logits, 1);
    if (banned >= 0) step_logp.select(1, banned).fill_(-std::numeric_limits<float>::infinity());
  };
  return run_search(model, source_lengths, one, 1, bos, eos, prepare, [&](Expansion& e) {
    const int64_t parent = e.slot;
    const auto logp = step_logp[parent].to(torch::kDouble);
    const int64_t token = samplers[static_cast<size_t>(e.input)].next(logp);
    const double lp = e.alive[static_cast<size_t>(parent)].log_prob + logp[token].item<double>();
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
