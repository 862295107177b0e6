#include "cellstate/models/language_model.h"

#include "cellstate/nn/dropout.h"
#include "cellstate/nn/gemm.h"

#include <torch/torch.h>

#include <algorithm>

namespace cellstate {

LanguageModelImpl::LanguageModelImpl(LanguageModelOptions options_) : options(std::move(options_)) { reset(); }

void LanguageModelImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.vocab_size() > 4, "LanguageModel: vocab_size must be > 4, got ", o.vocab_size());
  TORCH_CHECK(o.embed() > 0 && o.hidden() > 0 && o.layers() > 0,
              "LanguageModel: embed, hidden and layers must be positive, got ", o.embed(), ", ", o.hidden(), ", ",
              o.layers());
  auto check_probability = [](double p, const char* name) {
    TORCH_CHECK(p >= 0 && p < 1, "LanguageModel: ", name, " must be in [0, 1), got ", p);
  };
  check_probability(o.dropout(), "dropout");
  check_probability(o.embed_dropout().value_or(0), "embed_dropout");
  check_probability(o.hidden_dropout().value_or(0), "hidden_dropout");
  check_probability(o.vocabulary_dropout(), "vocabulary_dropout");
  check_probability(o.weight_dropout(), "weight_dropout");
  encoder = register_module("encoder", torch::nn::Embedding(o.vocab_size(), o.embed()));
  rnn = make_recurrent(RecurrentOptions(o.embed(), o.hidden())
                           .kind(o.kind())
                           .impl(o.impl())
                           .num_layers(o.layers())
                           .dropout(o.layers() > 1 ? o.hidden_dropout().value_or(o.dropout()) : 0.0)
                           .locked_dropout(o.locked_dropout())
                           .weight_dropout(o.weight_dropout()));
  register_module("rnn", rnn);
  const int64_t out_features = o.tie() ? o.embed() : o.hidden();
  projection = nullptr;
  if (o.tie() && o.embed() != o.hidden())
    projection = register_module("projection", torch::nn::Linear(o.hidden(), o.embed()));
  // The decoder's weight is the embedding matrix when tied: then only its
  // bias is a parameter of "decoder" (PyTorch's state dict also lists the
  // shared weight as decoder.weight).
  auto dec = register_module("decoder", std::make_shared<torch::nn::Module>("Decoder"));
  if (!o.tie()) decoder_weight = dec->register_parameter("weight", torch::empty({o.vocab_size(), out_features}));
  decoder_bias = dec->register_parameter("bias", torch::zeros({o.vocab_size()}));
  torch::NoGradGuard no_grad;
  encoder->weight.uniform_(-0.1, 0.1);
  if (!o.tie()) decoder_weight.uniform_(-0.1, 0.1);
}

torch::Tensor LanguageModelImpl::decode(torch::Tensor y) {
  if (projection) y = cellstate::linear(y, projection->weight, projection->bias);
  return cellstate::linear(y, options.tie() ? encoder->weight : decoder_weight, decoder_bias);
}

std::pair<torch::Tensor, RecurrentState> LanguageModelImpl::forward(const torch::Tensor& ids,
                                                                    const RecurrentState& state) {
  auto out = forward_outputs(ids, state);
  return {out.logits, out.state};
}

LanguageModelOutput LanguageModelImpl::forward_outputs(const torch::Tensor& ids, const RecurrentState& state) {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == torch::kInt64,
              "LanguageModel: expected int64 ids of shape [time, batch], got ", ids.scalar_type(), " ",
              ids.sizes());
  const auto& o = options;
  const bool train = is_training();
  auto dropout = [&](const torch::Tensor& x, double p) {
    if (!train || p == 0) return x;
    return o.locked_dropout() ? locked_dropout(x, p) : cellstate::dropout(x, p, /*train=*/true);
  };
  torch::Tensor x = train && o.vocabulary_dropout() > 0
                        ? torch::embedding(vocabulary_dropout(encoder->weight, o.vocabulary_dropout()), ids)
                        : encoder(ids);
  x = dropout(x, o.embed_dropout().value_or(o.dropout()));
  auto out = rnn->forward(x, {}, state);
  auto dropped = dropout(out.output, o.dropout());
  return {decode(dropped), out.state, out.output, dropped};
}

torch::Tensor LanguageModelImpl::step(const torch::Tensor& ids, RecurrentState& state) {
  TORCH_CHECK(ids.dim() == 1, "LanguageModel::step: expected ids of shape [batch], got ", ids.sizes());
  torch::NoGradGuard no_grad;
  const bool lstm = options.kind() == RecurrentKind::kLSTM;
  if (auto* custom = dynamic_cast<CustomRecurrentImpl*>(rnn.get()); custom && !is_training()) {
    if (!state.h.defined()) {
      state.h = torch::zeros({options.layers(), ids.size(0), options.hidden()}, encoder->weight.options());
      if (lstm) state.c = torch::zeros_like(state.h);
    }
    const auto params = custom->named_parameters(/*recurse=*/false);
    const auto* b_ih = params.find("bias_ih_l0");
    const auto gates =
        input_projections_.lookup(ids, encoder->weight, params["weight_ih_l0"], b_ih ? *b_ih : torch::Tensor());
    if (gates.defined()) {
      custom->step_projected_(gates, state);
    } else {
      custom->step_(encoder(ids), state);
    }
    return decode(state.h[options.layers() - 1]);
  }
  auto out = rnn->forward(encoder(ids).unsqueeze(0), {}, state);
  state = out.state;
  return decode(out.output[0]);
}

torch::Tensor InputProjectionCache::lookup(const torch::Tensor& ids, const torch::Tensor& embedding,
                                           const torch::Tensor& w_ih, const torch::Tensor& b_ih) {
  TORCH_CHECK(embedding.dim() == 2 && w_ih.dim() == 2 && w_ih.size(1) == embedding.size(1),
              "InputProjectionCache: expected embeddings [V, E] and W_ih [G*H, E], got ", embedding.sizes(),
              " and ", w_ih.sizes());
  const int64_t V = embedding.size(0), G = w_ih.size(0);
  if (V * G * static_cast<int64_t>(embedding.element_size()) > kMaxBytes) return {};
  std::vector<TensorStamp> sources;
  for (const auto* t : {&embedding, &w_ih, &b_ih}) sources.push_back(TensorStamp::of(*t));
  const auto precision = product_precision(embedding);
  if (sources != sources_ || precision != precision_ || !table_.defined() || table_.dtype() != embedding.dtype()) {
    table_ = torch::empty({V, G}, embedding.options());
    filled_.assign(static_cast<size_t>(V), 0);
    sources_ = std::move(sources);
    held_.clear();
    for (const auto* t : {&embedding, &w_ih, &b_ih})
      if (t->defined() && t->has_storage()) held_.push_back(t->storage());
    precision_ = precision;
    // int8 products quantize their left operand with one scale per call:
    // all rows in one product, so that a row never depends on which
    // others were missing with it.
    if (precision == MatmulPrecision::kInt8) {
      gemm_out(table_, embedding, w_ih.t(), 0, b_ih);
      filled_.assign(static_cast<size_t>(V), 1);
    }
  }
  const auto cpu_ids = ids.to(torch::kCPU, torch::kLong).contiguous();
  const auto* id = cpu_ids.data_ptr<int64_t>();
  std::vector<int64_t> missing;
  for (int64_t b = 0; b < cpu_ids.numel(); ++b) {
    TORCH_CHECK(id[b] >= 0 && id[b] < V, "LanguageModel: token id ", id[b], " out of range [0, ", V, ")");
    if (!filled_[static_cast<size_t>(id[b])]) missing.push_back(id[b]);
  }
  if (!missing.empty()) {
    std::sort(missing.begin(), missing.end());
    missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
    const auto rows = torch::tensor(missing, torch::kLong);
    const auto projected = torch::empty({rows.size(0), G}, embedding.options());
    gemm_out(projected, embedding.index_select(0, rows), w_ih.t(), 0, b_ih);
    table_.index_copy_(0, rows, projected);
    for (const int64_t v : missing) filled_[static_cast<size_t>(v)] = 1;
  }
  return table_.index_select(0, cpu_ids);
}

LanguageModelStepper::LanguageModelStepper(LanguageModel model, RecurrentState state)
    : model_(std::move(model)), state_(std::move(state)) {
  // The custom recurrence steps in place on contiguous state tensors.
  if (state_.h.defined()) state_.h = state_.h.contiguous();
  if (state_.c.defined()) state_.c = state_.c.contiguous();
}

torch::Tensor LanguageModelStepper::logits(const torch::Tensor& previous, torch::Tensor* /*attention*/) {
  return model_->step(previous, state_);
}

void LanguageModelStepper::select(const torch::Tensor& rows) {
  // States are [layers, N, H]: rows are the second dimension.
  if (state_.h.defined()) state_.h = state_.h.index_select(1, rows).contiguous();
  if (state_.c.defined()) state_.c = state_.c.index_select(1, rows).contiguous();
}

}  // namespace cellstate
