// Choosing the next token (decode/sampling.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "cellstate/util/io.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/tasks/textgen.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::copy_parameters;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;
using cellstate::testing::max_abs_diff;

TEST(Sampler, GreedyFiltersSeedsAndPenalties) {
  auto logits = torch::tensor({1.0, 3.0, 2.0, 0.5, 2.9});
  cs::SamplingOptions greedy;
  greedy.greedy = true;
  EXPECT_EQ(cs::Sampler(greedy, 1).next(logits), 1);
  EXPECT_EQ(cs::Sampler(greedy, 1).next(logits, {}, {1}), 4);  // banned
  // The repetition penalty divides a seen positive logit: 3.0 / 1.5 = 2 < 2.9.
  greedy.repetition_penalty = 1.5;
  EXPECT_EQ(cs::Sampler(greedy, 1).next(logits, {1, 1}), 4);
  // top-k 1 and a tiny top-p leave only the best token.
  cs::SamplingOptions k1;
  k1.top_k = 1;
  cs::SamplingOptions p;
  p.top_p = 0.01;
  cs::Sampler a(k1, 7), b(p, 7);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(a.next(logits), 1);
    EXPECT_EQ(b.next(logits), 1);
  }
  // top-k 2 only ever gives the two best; the same seed the same draws.
  cs::SamplingOptions k2;
  k2.top_k = 2;
  cs::Sampler s1(k2, 3), s2(k2, 3);
  std::vector<int64_t> d1, d2;
  for (int i = 0; i < 200; ++i) {
    d1.push_back(s1.next(logits));
    d2.push_back(s2.next(logits));
    EXPECT_TRUE(d1.back() == 1 || d1.back() == 4);
  }
  EXPECT_EQ(d1, d2);
  EXPECT_NE(std::count(d1.begin(), d1.end(), 4), 0);
  // Unfiltered sampling follows softmax(logits / T).
  cs::SamplingOptions t;
  t.temperature = 2.0;
  cs::Sampler s(t, 11);
  std::map<int64_t, int> counts;
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++counts[s.next(logits)];
  auto expected = torch::softmax(logits / 2.0, 0);
  for (int64_t i = 0; i < 5; ++i)
    EXPECT_NEAR(counts[i] / static_cast<double>(n), expected[i].item<double>(), 0.01) << i;
  cs::SamplingOptions bad;
  bad.temperature = 0;
  EXPECT_NE(exception_of([&] { bad.validate(); }).find("--temperature"), std::string::npos);
  bad = {};
  bad.top_p = 0;
  EXPECT_NE(exception_of([&] { bad.validate(); }).find("--top-p"), std::string::npos);
}
