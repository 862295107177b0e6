// Fine-tuning's pieces (tasks/finetune.h): label mapping, copying weights
// with new labels, --freeze.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cellstate/tasks/finetune.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::exception_of;

namespace {

/// A stand-in for a model: an embedding, a two-layer recurrent stack's
/// parameter names, an output layer and a label-by-label matrix.
struct Toy : torch::nn::Module {
  explicit Toy(int64_t labels) {
    embedding = register_parameter("embedding_weight", torch::randn({5, 3}));
    rnn_l0 = register_parameter("rnn_weight_hh_l0", torch::randn({4, 4}));
    rnn_l0r = register_parameter("rnn_weight_hh_l0_reverse", torch::randn({4, 4}));
    rnn_l1 = register_parameter("rnn_weight_hh_l1", torch::randn({4, 4}));
    out_w = register_parameter("out_weight", torch::randn({labels, 4}));
    out_b = register_parameter("out_bias", torch::randn({labels}));
    trans = register_parameter("transitions", torch::randn({labels, labels}));
  }
  torch::Tensor embedding, rnn_l0, rnn_l0r, rnn_l1, out_w, out_b, trans;
};

}  // namespace

TEST(Finetune, LabelMapping) {
  EXPECT_EQ(cs::label_mapping({"neg", "pos"}, {"neg", "neutral", "pos"}), (std::vector<int64_t>{0, -1, 1}));
  EXPECT_EQ(cs::label_mapping({"a"}, {"b"}), (std::vector<int64_t>{-1}));
}

TEST(Finetune, CopyWeightsKeepsSharedLabelsRowsAndNewOnesOwn) {
  torch::manual_seed(1);
  Toy source(2), target(3);
  const auto own_w = target.out_w.clone(), own_t = target.trans.clone();
  const std::vector<int64_t> mapping{0, -1, 1};  // target labels: source 0, new, source 1
  cs::copy_weights(source, target,
                   {{"out_weight", {0}}, {"out_bias", {0}}, {"transitions", {0, 1}}}, mapping, "src/config.json");
  EXPECT_TRUE(target.embedding.equal(source.embedding));
  EXPECT_TRUE(target.rnn_l1.equal(source.rnn_l1));
  EXPECT_TRUE(target.out_w[0].equal(source.out_w[0]));
  EXPECT_TRUE(target.out_w[2].equal(source.out_w[1]));
  EXPECT_TRUE(target.out_w[1].equal(own_w[1]));  // the new label keeps its initialisation
  EXPECT_TRUE(target.out_b[2].equal(source.out_b[1]));
  for (int64_t i : {0, 2})
    for (int64_t j : {0, 2})
      EXPECT_EQ(target.trans[i][j].item<float>(), source.trans[i / 2][j / 2].item<float>()) << i << "," << j;
  for (int64_t k = 0; k < 3; ++k) {
    EXPECT_EQ(target.trans[1][k].item<float>(), own_t[1][k].item<float>());
    EXPECT_EQ(target.trans[k][1].item<float>(), own_t[k][1].item<float>());
  }
}

TEST(Finetune, CopyWeightsRefusesAnotherArchitecture) {
  Toy source(2), target(3);
  // Without the output layer declared label-indexed, its shape differs.
  const auto message = exception_of([&] { cs::copy_weights(source, target, {}, {}, "src/config.json"); });
  EXPECT_NE(message.find("src/config.json"), std::string::npos) << message;
  EXPECT_NE(message.find("a different architecture"), std::string::npos) << message;
}

TEST(Finetune, FreezeGroupsAndPrefixes) {
  cs::FreezeGroups groups;
  groups.embeddings = {"embedding"};
  groups.recurrent_prefix = "rnn_";
  groups.recurrent_layers = 2;
  {
    Toy m(2);
    const auto summary = cs::apply_freeze(m, "embeddings,layers=1", groups);
    EXPECT_FALSE(m.embedding.requires_grad());
    EXPECT_FALSE(m.rnn_l0.requires_grad());
    EXPECT_FALSE(m.rnn_l0r.requires_grad());
    EXPECT_TRUE(m.rnn_l1.requires_grad());
    EXPECT_TRUE(m.out_w.requires_grad());
    EXPECT_NE(summary.find("3 tensors"), std::string::npos) << summary;
  }
  {
    Toy m(2);
    cs::apply_freeze(m, "out_", groups);
    EXPECT_FALSE(m.out_w.requires_grad());
    EXPECT_FALSE(m.out_b.requires_grad());
    EXPECT_TRUE(m.trans.requires_grad());
  }
  Toy m(2);
  EXPECT_EQ(cs::apply_freeze(m, "", groups), "");
  EXPECT_NE(exception_of([&] { cs::apply_freeze(m, "layers=3", groups); }).find("expected K in [1, 2]"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::apply_freeze(m, "layers=x", groups); }).find("layers=K"), std::string::npos);
  EXPECT_NE(exception_of([&] { cs::apply_freeze(m, "decoder", groups); }).find("no parameter of the model matches"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::apply_freeze(m, "embeddings,,", groups); }).find("empty item"), std::string::npos);
}
