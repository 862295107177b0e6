#pragma once
// Parameter initialisation shared by the cells and the layers (internal).
#include <torch/torch.h>

namespace cellstate::detail {

/// PyTorch's recurrent initialisation: every parameter U(−1/√H, 1/√H).
inline void init_uniform(torch::Tensor& param, int64_t hidden_size) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(hidden_size));
  torch::NoGradGuard no_grad;
  param.uniform_(-bound, bound);
}

/// LSTM forget-gate bias: rows [H, 2H) of b_ih to `value` and of b_hh to 0.
inline void set_forget_bias(torch::Tensor& bias_ih, torch::Tensor& bias_hh, int64_t hidden_size,
                            double value) {
  torch::NoGradGuard no_grad;
  bias_ih.narrow(0, hidden_size, hidden_size).fill_(value);
  bias_hh.narrow(0, hidden_size, hidden_size).fill_(0.0);
}

}  // namespace cellstate::detail
