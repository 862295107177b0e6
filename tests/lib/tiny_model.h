#pragma once
// A tiny sequence classifier for the training and model-directory tests.
#include <torch/torch.h>

#include "cellstate/nn/rnn.h"

namespace cellstate::testing {

namespace cs = cellstate;

// A tiny sequence classifier: embedding -> LSTM (library) -> dropout -> linear.
struct TinyImpl : torch::nn::Module {
  TinyImpl(cs::Implementation impl, uint64_t seed) {
    torch::manual_seed(seed);
    embed = register_module("embed", torch::nn::Embedding(10, 8));
    rnn = register_module("rnn", cs::make_recurrent(cs::RecurrentOptions(8, 12).batch_first(true).impl(impl)));
    out = register_module("out", torch::nn::Linear(12, 2));
    drop = register_module("drop", torch::nn::Dropout(0.3));
  }
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& lengths) {
    auto r = rnn->forward(embed(ids), lengths);
    return out(drop(r.state.h[-1]));
  }
  torch::nn::Embedding embed{nullptr};
  std::shared_ptr<cs::RecurrentModuleImpl> rnn;
  torch::nn::Linear out{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(Tiny);

}  // namespace cellstate::testing
