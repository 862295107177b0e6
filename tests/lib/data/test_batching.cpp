// Padding and length bucketing (data/batching.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "cellstate/data/batching.h"
#include "cellstate/util/io.h"
#include "cellstate/data/readers.h"
#include "cellstate/util/random.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;

TEST(Batching, PadBatchLengthsAndMask) {
  auto b = cs::pad_batch({{5, 6, 7}, {8}, {9, 10}});
  EXPECT_TRUE(torch::equal(b.ids, torch::tensor({5, 6, 7, 8, 0, 0, 9, 10, 0}, torch::kInt64).view({3, 3})));
  EXPECT_TRUE(torch::equal(b.lengths, torch::tensor({3, 1, 2}, torch::kInt64)));
  EXPECT_EQ(b.mask.sum().item<int64_t>(), 6);
  EXPECT_FALSE(b.mask[1][1].item<bool>());
  std::vector<int64_t> ids = {1, 2, 3, 4};
  EXPECT_TRUE(cs::truncate(ids, 2));
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_FALSE(cs::truncate(ids, 0));
}

TEST(Batching, BucketsAreDeterministicCompleteAndTight) {
  std::vector<int64_t> lengths;
  cs::DataRng rng(7);
  for (int i = 0; i < 1000; ++i) lengths.push_back(1 + static_cast<int64_t>(rng.below(60)));
  cs::BucketOptions opt;
  opt.batch_size = 16;
  const auto a = cs::bucket_batches(lengths, opt, 1, 0);
  EXPECT_EQ(a, cs::bucket_batches(lengths, opt, 1, 0));
  EXPECT_NE(a, cs::bucket_batches(lengths, opt, 1, 1));
  EXPECT_NE(a, cs::bucket_batches(lengths, opt, 2, 0));
  std::multiset<int64_t> seen;
  auto padding = [&](const std::vector<std::vector<int64_t>>& batches) {
    int64_t pad = 0;
    for (const auto& b : batches) {
      int64_t longest = 0;
      for (auto i : b) longest = std::max(longest, lengths[static_cast<size_t>(i)]);
      for (auto i : b) pad += longest - lengths[static_cast<size_t>(i)];
    }
    return pad;
  };
  for (const auto& b : a) {
    EXPECT_LE(b.size(), 16u);
    seen.insert(b.begin(), b.end());
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 1000u);
  cs::BucketOptions random = opt;
  random.chunk_batches = 1;
  EXPECT_LT(padding(a) * 5, padding(cs::bucket_batches(lengths, random, 1, 0)));

  cs::BucketOptions by_tokens;
  by_tokens.max_tokens = 200;
  for (const auto& b : cs::bucket_batches(lengths, by_tokens, 1, 0)) {
    int64_t longest = 0;
    for (auto i : b) longest = std::max(longest, lengths[static_cast<size_t>(i)]);
    EXPECT_TRUE(b.size() == 1 || longest * static_cast<int64_t>(b.size()) <= 200);
  }
  const auto sorted = cs::sorted_batches({3, 9, 1, 9, 4}, 2);
  EXPECT_EQ(sorted, (std::vector<std::vector<int64_t>>{{1, 3}, {4, 0}, {2}}));
}
