#include "cellstate/nn/dropout.h"

namespace cellstate {

namespace {

void check_probability(double p, const char* what) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, what, ": expected a probability in [0, 1), got ", p);
}

/// Bernoulli(1 − p) / (1 − p) of `shape`, like `like`, without autograd.
torch::Tensor keep_mask(at::IntArrayRef shape, const torch::Tensor& like, double p) {
  return torch::empty(shape, like.options().requires_grad(false)).bernoulli_(1.0 - p).div_(1.0 - p);
}

}  // namespace

torch::Tensor drop_connect(const torch::Tensor& weight, double p) {
  check_probability(p, "drop_connect");
  if (p == 0.0) return weight;
  return weight * keep_mask(weight.sizes(), weight, p);
}

torch::Tensor locked_dropout(const torch::Tensor& x, double p) {
  check_probability(p, "locked_dropout");
  TORCH_CHECK(x.dim() >= 2, "locked_dropout: expected [time, batch, ...], got shape ", x.sizes());
  if (p == 0.0) return x;
  auto shape = x.sizes().vec();
  shape[0] = 1;
  return x * keep_mask(shape, x, p);
}

torch::Tensor locked_dropout_packed(const torch::Tensor& data, const torch::Tensor& batch_sizes, double p) {
  check_probability(p, "locked_dropout_packed");
  TORCH_CHECK(data.dim() == 2 && batch_sizes.dim() == 1,
              "locked_dropout_packed: expected data [rows, features] and batch_sizes [steps], got ", data.sizes(),
              " and ", batch_sizes.sizes());
  if (p == 0.0) return data;
  const auto sizes = batch_sizes.to(torch::kCPU, torch::kLong).contiguous();
  const auto* bs = sizes.data_ptr<int64_t>();
  const int64_t steps = sizes.size(0);
  TORCH_CHECK(steps > 0, "locked_dropout_packed: no steps");
  // Row r of the packed data belongs to sequence `sequence[r]`.
  std::vector<int64_t> sequence;
  sequence.reserve(static_cast<size_t>(data.size(0)));
  for (int64_t t = 0; t < steps; ++t)
    for (int64_t b = 0; b < bs[t]; ++b) sequence.push_back(b);
  TORCH_CHECK(static_cast<int64_t>(sequence.size()) == data.size(0), "locked_dropout_packed: batch_sizes sum to ",
              sequence.size(), ", the data has ", data.size(0), " rows");
  const auto mask = keep_mask({bs[0], data.size(1)}, data, p);
  return data * mask.index_select(0, torch::tensor(sequence, torch::kLong).to(data.device()));
}

torch::Tensor vocabulary_dropout(const torch::Tensor& embedding, double p) {
  check_probability(p, "vocabulary_dropout");
  TORCH_CHECK(embedding.dim() == 2, "vocabulary_dropout: expected an embedding matrix [vocab, dim], got shape ",
              embedding.sizes());
  if (p == 0.0) return embedding;
  return embedding * keep_mask({embedding.size(0), 1}, embedding, p);
}

}  // namespace cellstate
