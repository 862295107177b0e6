// clone() of every module of nn/ (nn/cloneable.h): an equal copy that shares
// no storage with the original, of the original's type.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cellstate/nn/cells.h"
#include "cellstate/nn/crf.h"
#include "cellstate/nn/rnn.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::max_abs_diff;

namespace {

/// The copy computes what the original does; changing the original's
/// parameters afterwards leaves the copy as it was.
template <typename Run>
void expect_independent_copy(torch::nn::Module& original, torch::nn::Module& copy, Run run) {
  const auto before = run(original);
  EXPECT_EQ(max_abs_diff(run(copy), before), 0.0);
  ASSERT_EQ(original.named_parameters().size(), copy.named_parameters().size());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : original.parameters()) p.add_(1.0);
  }
  EXPECT_GT(max_abs_diff(run(original), before), 0.0);
  EXPECT_EQ(max_abs_diff(run(copy), before), 0.0);
}

}  // namespace

TEST(Cloneable, RecurrentModulesAndCells) {
  torch::manual_seed(3);
  const auto x = torch::randn({5, 2, 4});
  const auto lengths = torch::tensor({5, 3}, torch::kInt64);
  for (auto impl : {cs::Implementation::kCustom, cs::Implementation::kBuiltin}) {
    for (auto kind : {cs::RecurrentKind::kLSTM, cs::RecurrentKind::kGRU, cs::RecurrentKind::kRNN}) {
      auto m = cs::make_recurrent(cs::RecurrentOptions(4, 3).kind(kind).impl(impl).num_layers(2).bidirectional(true));
      auto copy = std::dynamic_pointer_cast<cs::RecurrentModuleImpl>(m->clone());
      ASSERT_NE(copy, nullptr);
      EXPECT_EQ(copy->options.num_layers(), 2);
      expect_independent_copy(*m, *copy, [&](torch::nn::Module& mod) {
        return dynamic_cast<cs::RecurrentModuleImpl&>(mod).forward(x, lengths).output.detach();
      });
    }
  }
  cs::LSTM lstm(4, 3);
  auto lstm_copy = std::dynamic_pointer_cast<cs::LSTMImpl>(lstm->clone());
  ASSERT_NE(lstm_copy, nullptr);  // still an LSTM, with its call shape
  EXPECT_EQ(max_abs_diff(std::get<0>(lstm_copy->forward(x)), std::get<0>(lstm->forward(x))), 0.0);

  cs::LSTMCell cell(4, 3);
  auto cell_copy = std::dynamic_pointer_cast<cs::LSTMCellImpl>(cell->clone());
  ASSERT_NE(cell_copy, nullptr);
  expect_independent_copy(*cell, *cell_copy, [&](torch::nn::Module& mod) {
    return std::get<0>(dynamic_cast<cs::LSTMCellImpl&>(mod).forward(x[0])).detach();
  });
  cs::GRUCell gru(4, 3);
  auto gru_copy = std::dynamic_pointer_cast<cs::GRUCellImpl>(gru->clone());
  ASSERT_NE(gru_copy, nullptr);
  EXPECT_EQ(max_abs_diff(gru_copy->forward(x[0]), gru->forward(x[0])), 0.0);
}

TEST(Cloneable, CrfKeepsItsConstraints) {
  cs::CRF crf(cs::CRFOptions(3));
  crf->set_constraints(cs::tag_constraints({"O", "B-X", "I-X"}, cs::TagScheme::kIOB2));
  auto copy = std::dynamic_pointer_cast<cs::CRFImpl>(crf->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_TRUE(copy->allowed.equal(crf->allowed));
  EXPECT_EQ(max_abs_diff(copy->effective_transitions(), crf->effective_transitions()), 0.0);
}
