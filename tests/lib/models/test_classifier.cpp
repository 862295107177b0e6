// The recurrent text classifier (models/classifier.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>

#include "cellstate/util/io.h"
#include "cellstate/tasks/sentiment.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;

TEST(TextClassifier, PoolingsMaskPaddingSoBatchesDoNotMatter) {
  for (auto pooling : {cs::Pooling::kLast, cs::Pooling::kMax, cs::Pooling::kMean, cs::Pooling::kAttention}) {
    torch::manual_seed(3);
    cs::TextClassifier m(cs::TextClassifierOptions(30, 3).embed(8).hidden(6).layers(2).pooling(pooling));
    m->eval();
    torch::NoGradGuard g;
    auto alone = m->forward(torch::tensor({{5, 6, 7}}, torch::kInt64), torch::tensor({3}, torch::kInt64));
    auto batch = m->forward(torch::tensor({{9, 8, 7, 6, 5, 4}, {5, 6, 7, 0, 0, 0}}, torch::kInt64),
                            torch::tensor({6, 3}, torch::kInt64));
    EXPECT_LT((alone[0] - batch[1]).abs().max().item<double>(), 1e-6) << cs::to_string(pooling);
  }
  EXPECT_THROW(cs::parse_pooling("sum"), std::invalid_argument);
}
