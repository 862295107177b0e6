// The linear-chain CRF (lib/src/crf.cpp) against brute force over every tag path.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>

#include "cellstate/nn/crf.h"
#include "test_util.h"

namespace cs = cellstate;

namespace {

// Every tag sequence of length n over k tags.
void for_each_path(int64_t k, int64_t n, const std::function<void(const std::vector<int64_t>&)>& f) {
  std::vector<int64_t> path(static_cast<size_t>(n), 0);
  for (;;) {
    f(path);
    int64_t i = n - 1;
    while (i >= 0 && ++path[static_cast<size_t>(i)] == k) path[static_cast<size_t>(i--)] = 0;
    if (i < 0) return;
  }
}

double path_score(const cs::CRF& crf, const torch::Tensor& e, int64_t b, const std::vector<int64_t>& y) {
  const auto A = crf->effective_transitions(), s = crf->effective_start(), f = crf->effective_end();
  double total = s[y[0]].item<double>() + e[b][0][y[0]].item<double>();
  for (size_t t = 1; t < y.size(); ++t)
    total += A[y[t - 1]][y[t]].item<double>() + e[b][static_cast<int64_t>(t)][y[t]].item<double>();
  return total + f[y.back()].item<double>();
}

struct Case {
  cs::CRF crf{cs::CRFOptions(3)};
  torch::Tensor e, mask;
  std::vector<int64_t> lengths = {4, 2, 1};
  Case() {
    torch::manual_seed(7);
    crf->to(torch::kDouble);
    {
      torch::NoGradGuard g;
      crf->transitions.normal_();
      crf->start_transitions.normal_();
      crf->end_transitions.normal_();
    }
    e = torch::randn({3, 4, 3}, torch::kDouble);
    mask = torch::arange(4).unsqueeze(0) < torch::tensor(lengths).unsqueeze(1);
  }
};

}  // namespace

TEST(CRF, LogPartitionScoreAndViterbiEqualBruteForce) {
  Case c;
  const auto log_z = c.crf->log_partition(c.e, c.mask);
  std::vector<double> best_scores;
  const auto paths = c.crf->viterbi(c.e, c.mask, &best_scores);
  for (int64_t b = 0; b < 3; ++b) {
    const auto n = c.lengths[static_cast<size_t>(b)];
    std::vector<double> scores;
    double best = -1e300;
    std::vector<int64_t> best_path;
    for_each_path(3, n, [&](const std::vector<int64_t>& y) {
      const double s = path_score(c.crf, c.e, b, y);
      scores.push_back(s);
      if (s > best) best = s, best_path = y;
      // score() of this exact path, padded with arbitrary tags past the length.
      std::vector<int64_t> padded = y;
      padded.resize(4, 2);
      auto tags = torch::zeros({3, 4}, torch::kInt64);
      tags[b] = torch::tensor(padded);
      EXPECT_NEAR(c.crf->score(c.e, tags, c.mask)[b].item<double>(), s, 1e-10);
    });
    double m = *std::max_element(scores.begin(), scores.end()), sum = 0;
    for (double s : scores) sum += std::exp(s - m);
    EXPECT_NEAR(log_z[b].item<double>(), m + std::log(sum), 1e-10) << "sentence " << b;
    EXPECT_EQ(paths[static_cast<size_t>(b)], best_path) << "sentence " << b;
    EXPECT_NEAR(best_scores[static_cast<size_t>(b)], best, 1e-10);
  }
}

TEST(CRF, MaskedPositionsChangeNothing) {
  Case c;
  auto e2 = c.e.clone();
  e2.masked_fill_(~c.mask.unsqueeze(2), 1000.0);  // garbage past each length
  EXPECT_TRUE(torch::allclose(c.crf->log_partition(c.e, c.mask), c.crf->log_partition(e2, c.mask)));
  EXPECT_EQ(c.crf->viterbi(c.e, c.mask), c.crf->viterbi(e2, c.mask));
  // One sentence alone equals the same sentence inside the batch.
  auto alone = c.crf->log_partition(c.e.slice(0, 1, 2).slice(1, 0, 2), torch::ones({1, 2}, torch::kBool));
  EXPECT_NEAR(alone.item<double>(), c.crf->log_partition(c.e, c.mask)[1].item<double>(), 1e-12);
}

TEST(CRF, MarginalsAndSegmentProbabilities) {
  Case c;
  const auto marg = c.crf->marginals(c.e, c.mask);
  const auto log_z = c.crf->log_partition(c.e, c.mask);
  const int64_t b = 0, n = 4;
  auto brute = torch::zeros({n, 3}, torch::kDouble);
  double seg = 0;  // P(y1 = 2, y2 = 0 and y3 != 0)
  for_each_path(3, n, [&](const std::vector<int64_t>& y) {
    const double p = std::exp(path_score(c.crf, c.e, b, y) - log_z[b].item<double>());
    for (int64_t t = 0; t < n; ++t) brute[t][y[static_cast<size_t>(t)]] += p;
    if (y[1] == 2 && y[2] == 0 && y[3] != 0) seg += p;
  });
  EXPECT_TRUE(torch::allclose(marg[b], brute, 1e-9, 1e-12));
  EXPECT_TRUE(torch::allclose(marg.sum(2), c.mask.to(torch::kDouble)));
  EXPECT_NEAR(c.crf->segment_probability(c.e, c.mask, b, 1, {2, 0}, {0}), seg, 1e-10);
  EXPECT_NEAR(c.crf->segment_probability(c.e, c.mask, b, 0, {1, 1, 1, 1}, {}),
              std::exp(path_score(c.crf, c.e, b, {1, 1, 1, 1}) - log_z[b].item<double>()), 1e-10);
  // Many spans of the batch at once give what each gives alone.
  std::vector<cellstate::CRFImpl::SpanQuery> queries{{0, 1, {2, 0}, {0}}, {1, 0, {1}, {}}, {0, 3, {2}, {}}};
  const auto many = c.crf->span_probabilities(c.e, c.mask, queries);
  ASSERT_EQ(many.size(), 3u);
  for (size_t k = 0; k < 3; ++k)
    EXPECT_NEAR(many[k], c.crf->segment_probability(c.e, c.mask, queries[k].batch, queries[k].start, queries[k].tags,
                                                    queries[k].not_next), 1e-12);
  EXPECT_NEAR(many[0], seg, 1e-10);
}

TEST(CRF, InferenceLoopsAgreeWithTheTensorRecurrences) {
  // Viterbi and span probabilities run as plain loops; log_partition and
  // marginals as LibTorch operations. Realistic sizes, constraints (whose
  // -10,000 scores the loops' exponentials turn into zeros), float32
  // emissions, large ones too (the loops' shifted exponentials).
  const std::vector<std::string> tags = {"O",     "B-PER", "I-PER", "E-PER", "S-PER",
                                         "B-LOC", "I-LOC", "E-LOC", "S-LOC"};
  const auto K = static_cast<int64_t>(tags.size());
  cs::CRF crf{cs::CRFOptions(K)};
  crf->set_constraints(cs::tag_constraints(tags, cs::TagScheme::kIOBES));
  torch::manual_seed(5);
  {
    torch::NoGradGuard g;
    crf->transitions.normal_();
  }
  for (const double scale : {1.0, 40.0}) {
    const auto e = torch::randn({12, 30, K}) * scale;
    const auto lengths = torch::randint(1, 31, {12});
    const auto mask = torch::arange(30).unsqueeze(0) < lengths.unsqueeze(1);
    const auto marg = crf->marginals(e.to(torch::kDouble), mask);
    std::vector<cs::CRFImpl::SpanQuery> queries;
    for (int64_t b = 0; b < 12; ++b)
      for (int64_t t = 0; t < lengths[b].item<int64_t>(); t += 3)
        for (int64_t k = 0; k < K; ++k) queries.push_back({b, t, {k}, {}});
    std::reverse(queries.begin(), queries.end());  // any order
    const auto p = crf->span_probabilities(e, mask, queries);
    for (size_t i = 0; i < queries.size(); ++i) {
      const auto& q = queries[i];
      EXPECT_NEAR(p[i], marg[q.batch][q.start][q.tags[0]].item<double>(), 1e-9)
          << "scale " << scale << " sentence " << q.batch << " position " << q.start << " tag " << q.tags[0];
    }
    std::vector<double> best;
    const auto paths = crf->viterbi(e, mask, &best);
    const auto log_z = crf->log_partition(e.to(torch::kDouble), mask);
    for (int64_t b = 0; b < 12; ++b) {
      auto y = torch::zeros({12, 30}, torch::kInt64);
      const auto& path = paths[static_cast<size_t>(b)];
      ASSERT_EQ(static_cast<int64_t>(path.size()), lengths[b].item<int64_t>());
      y[b].slice(0, 0, static_cast<int64_t>(path.size())) = torch::tensor(path);
      const double s = crf->score(e.to(torch::kDouble), y, mask)[b].item<double>();
      EXPECT_NEAR(best[static_cast<size_t>(b)], s, 1e-9 * std::max(1.0, std::abs(s)));
      EXPECT_LE(s, log_z[b].item<double>() + 1e-9);  // a path's probability is at most 1
      // No single tag changed scores higher (the best path is locally best too).
      for (size_t t = 0; t < path.size(); ++t)
        for (int64_t k = 0; k < K; ++k) {
          auto z = y.clone();
          z[b][static_cast<int64_t>(t)] = k;
          EXPECT_LE(crf->score(e.to(torch::kDouble), z, mask)[b].item<double>(), s + 1e-9);
        }
    }
  }
  EXPECT_THROW(crf->span_probabilities(torch::zeros({1, 2, K}), torch::ones({1, 2}, torch::kBool), {{0, 0, {K}, {}}}),
               c10::Error);
  EXPECT_THROW(crf->span_probabilities(torch::zeros({1, 2, K}), torch::ones({1, 2}, torch::kBool), {{0, 1, {1, 2}, {}}}),
               c10::Error);
}

TEST(CRF, LogPartitionLoopsEqualTheTensorRecurrenceWithGradients) {
  // log_partition runs as float64 loops with its gradients (the marginals)
  // computed alongside; log_partition_tensors is the forward recurrence as
  // LibTorch operations, differentiated by autograd. Realistic sizes, IOBES
  // constraints, float32 and float64 emissions, large ones too.
  const std::vector<std::string> tags = {"O",     "B-PER", "I-PER", "E-PER", "S-PER",
                                         "B-LOC", "I-LOC", "E-LOC", "S-LOC"};
  const auto K = static_cast<int64_t>(tags.size());
  cs::CRF crf{cs::CRFOptions(K)};
  crf->set_constraints(cs::tag_constraints(tags, cs::TagScheme::kIOBES));
  torch::manual_seed(11);
  {
    torch::NoGradGuard g;
    crf->transitions.normal_();
    crf->start_transitions.normal_();
    crf->end_transitions.normal_();
  }
  for (const auto dtype : {torch::kDouble, torch::kFloat})
    for (const double scale : {1.0, 40.0}) {
      crf->to(dtype);
      const auto lengths = torch::randint(1, 31, {12});
      lengths[3] = 30;
      lengths[4] = 1;
      const auto mask = torch::arange(30).unsqueeze(0) < lengths.unsqueeze(1);
      const auto e = (torch::randn({12, 30, K}) * scale).to(dtype).requires_grad_(true);
      const auto weights = torch::rand({12}, dtype);  // a different grad_output per sentence
      const std::vector<torch::Tensor> inputs{e, crf->transitions, crf->start_transitions, crf->end_transitions};
      const auto fast = crf->log_partition(e, mask);
      const auto slow = crf->log_partition_tensors(e, mask);
      EXPECT_EQ(fast.scalar_type(), dtype);
      const double tol = dtype == torch::kDouble ? 1e-9 : 2e-3;
      EXPECT_LT(cellstate::testing::max_abs_diff(fast, slow), tol * scale) << "scale " << scale;
      const auto g_fast = torch::autograd::grad({(fast * weights).sum()}, inputs);
      const auto g_slow = torch::autograd::grad({(slow * weights).sum()}, inputs);
      const char* names[] = {"emissions", "transitions", "start", "end"};
      for (size_t i = 0; i < inputs.size(); ++i)
        EXPECT_LT(cellstate::testing::max_abs_diff(g_fast[i], g_slow[i]), dtype == torch::kDouble ? 1e-9 : 1e-4)
            << names[i] << " scale " << scale;
      // No gradient past each sentence's end, and each position's sums to its weight.
      EXPECT_EQ(g_fast[0].masked_select(~mask.unsqueeze(2).expand_as(e)).abs().max().item<double>(), 0.0);
      EXPECT_LT(cellstate::testing::max_abs_diff(g_fast[0].sum(2).select(1, 0), weights), 1e-5);
      // Without autograd the same values.
      torch::NoGradGuard g;
      EXPECT_TRUE(torch::equal(crf->log_partition(e, mask), fast));
    }
}

TEST(CRF, GradientsMatchFiniteDifferences) {
  Case c;
  auto e = c.e.clone().requires_grad_(true);
  auto tags = torch::tensor({{0, 2, 1, 1}, {2, 2, 0, 0}, {1, 0, 0, 0}}, torch::kInt64);
  auto loss = [&] { return c.crf->neg_log_likelihood(e, tags, c.mask).sum(); };
  const std::vector<torch::Tensor> inputs{c.crf->transitions, c.crf->start_transitions, c.crf->end_transitions, e};
  const auto grads = torch::autograd::grad({loss()}, inputs);
  cellstate::testing::expect_gradients_match_finite_differences(loss, inputs, grads, 1e-6, "CRF");
}

TEST(CRF, ForbiddenTransitionsNeverDecoded) {
  const std::vector<std::string> bio = {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"};
  const std::vector<std::string> iobes = {"O", "B-PER", "I-PER", "E-PER", "S-PER"};
  for (auto [tags, scheme] : {std::pair{bio, cs::TagScheme::kIOB2}, std::pair{iobes, cs::TagScheme::kIOBES},
                              std::pair{bio, cs::TagScheme::kIOB1}}) {
    cs::CRF crf(cs::CRFOptions(static_cast<int64_t>(tags.size())));
    crf->set_constraints(cs::tag_constraints(tags, scheme));
    torch::manual_seed(1);
    // Emissions that on their own would pick invalid sequences often.
    auto e = torch::randn({64, 7, static_cast<int64_t>(tags.size())}) * 5;
    auto lengths = torch::randint(1, 8, {64});
    auto mask = torch::arange(7).unsqueeze(0) < lengths.unsqueeze(1);
    mask.select(1, 0).fill_(true);
    for (const auto& path : crf->viterbi(e, mask)) {
      std::vector<std::string> names;
      for (auto t : path) names.push_back(tags[static_cast<size_t>(t)]);
      // Valid sequences survive a round trip through entity spans unchanged.
      EXPECT_EQ(cs::convert_tags(names, scheme, scheme), names) << cs::to_string(scheme);
    }
  }
  const auto c = cs::tag_constraints(bio, cs::TagScheme::kIOB2);
  EXPECT_FALSE(c.start[2]);          // I-PER cannot start
  EXPECT_FALSE(c.transition[0][2]);  // O -> I-PER
  EXPECT_FALSE(c.transition[3][2]);  // B-LOC -> I-PER
  EXPECT_TRUE(c.transition[1][2]);   // B-PER -> I-PER
  EXPECT_THROW(cs::tag_constraints({"O", "S-PER"}, cs::TagScheme::kIOB2), std::invalid_argument);
}
