#include "cellstate/models/classifier.h"

#include "cellstate/nn/dropout.h"
#include "cellstate/nn/gemm.h"
#include "cellstate/nn/pooling.h"

#include <torch/torch.h>


namespace cellstate {

Pooling parse_pooling(const std::string& name) {
  if (name == "last") return Pooling::kLast;
  if (name == "max") return Pooling::kMax;
  if (name == "mean") return Pooling::kMean;
  if (name == "attention") return Pooling::kAttention;
  throw std::invalid_argument("pooling must be last, max, mean or attention, got '" + name + "'");
}

std::string to_string(Pooling pooling) {
  switch (pooling) {
    case Pooling::kLast: return "last";
    case Pooling::kMax: return "max";
    case Pooling::kMean: return "mean";
    case Pooling::kAttention: return "attention";
  }
  return "?";
}

TextClassifierImpl::TextClassifierImpl(TextClassifierOptions options_) : options(std::move(options_)) {
  reset();
}

void TextClassifierImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.vocab_size() > 4, "TextClassifier: vocab_size must be > 4, got ", o.vocab_size());
  TORCH_CHECK(o.num_classes() >= 2, "TextClassifier: expected at least 2 classes, got ", o.num_classes());
  TORCH_CHECK(o.embed() > 0 && o.hidden() > 0 && o.layers() > 0,
              "TextClassifier: embed, hidden and layers must be positive");
  TORCH_CHECK(o.dropout() >= 0 && o.dropout() < 1 && o.embed_dropout() >= 0 && o.embed_dropout() < 1 &&
                  o.word_dropout() >= 0 && o.word_dropout() < 1,
              "TextClassifier: dropout probabilities must be in [0, 1)");
  embedding = register_module(
      "embedding", torch::nn::Embedding(torch::nn::EmbeddingOptions(o.vocab_size(), o.embed()).padding_idx(0)));
  torch::nn::init::normal_(embedding->weight, 0.0, 0.1);
  {
    torch::NoGradGuard g;
    embedding->weight[0].zero_();
  }
  encoder = make_recurrent(RecurrentOptions(o.embed(), o.hidden())
                               .kind(o.kind())
                               .impl(o.impl())
                               .num_layers(o.layers())
                               .bidirectional(o.bidirectional())
                               .dropout(o.layers() > 1 ? o.dropout() : 0.0)
                               .batch_first(true));
  register_module("encoder", encoder);
  const int64_t features = o.hidden() * (o.bidirectional() ? 2 : 1);
  if (o.pooling() == Pooling::kAttention) {
    attention_proj = register_module("attention_proj", torch::nn::Linear(features, o.hidden()));
    attention_score =
        register_module("attention_score", torch::nn::Linear(torch::nn::LinearOptions(o.hidden(), 1).bias(false)));
  }
  output = register_module("output", torch::nn::Linear(features, o.num_classes()));
  if (o.lm_weight() > 0) lm_proj = register_module("lm_proj", torch::nn::Linear(o.hidden(), o.embed()));
}

torch::Tensor TextClassifierImpl::forward(const torch::Tensor& ids, const torch::Tensor& lengths) {
  return forward_with_lm(ids, lengths).first;
}

std::pair<torch::Tensor, torch::Tensor> TextClassifierImpl::forward_with_lm(const torch::Tensor& ids_in,
                                                                            const torch::Tensor& lengths) {
  TORCH_CHECK(ids_in.dim() == 2, "TextClassifier: expected ids [batch, time], got ", ids_in.sizes());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == ids_in.size(0),
              "TextClassifier: expected lengths [", ids_in.size(0), "], got ", lengths.sizes());
  const auto& o = options;
  torch::Tensor ids = ids_in;
  const auto time = torch::arange(ids.size(1), lengths.options()).unsqueeze(0);
  const auto mask = time < lengths.unsqueeze(1);  // [B, T]
  if (is_training() && o.word_dropout() > 0) {
    auto drop = torch::bernoulli(torch::full(ids.sizes(), o.word_dropout())).to(torch::kBool) & mask;
    ids = ids.masked_fill(drop, options.unk_id());
  }
  auto x = cellstate::dropout(embedding(ids), o.embed_dropout(), is_training());
  auto r = encoder->forward(x, lengths);
  const auto& h = r.output;  // [B, T, F], zeros at padding
  torch::Tensor pooled;
  switch (o.pooling()) {
    case Pooling::kLast: {
      // Final state of the last layer, both directions.
      const int64_t dirs = o.bidirectional() ? 2 : 1;
      auto last = r.state.h.slice(0, r.state.h.size(0) - dirs);  // [dirs, B, H]
      pooled = last.transpose(0, 1).reshape({h.size(0), -1});
      break;
    }
    case Pooling::kMax:
      pooled = masked_max_over_time(h, lengths);
      break;
    case Pooling::kMean:
      pooled = h.sum(1) / lengths.unsqueeze(1).to(h.dtype());
      break;
    case Pooling::kAttention: {
      const auto projected = torch::tanh(linear_layer(h, attention_proj->weight, attention_proj->bias));
      auto scores = linear_layer(projected, attention_score->weight).squeeze(2);  // [B, T]
      scores = scores.masked_fill(~mask, -1e9);
      auto weights = torch::softmax(scores, 1).unsqueeze(2);
      pooled = (weights * h).sum(1);
      break;
    }
  }
  auto logits = linear_layer(cellstate::dropout(pooled, o.dropout(), is_training()), output->weight, output->bias);
  torch::Tensor lm_loss = torch::zeros({}, logits.options());
  if (o.lm_weight() > 0 && is_training() && ids_in.size(1) > 1) {
    // Forward states at t predict token t+1; backward states at t predict t-1.
    const int64_t H = o.hidden();
    auto predict = [&](const torch::Tensor& states, const torch::Tensor& targets, const torch::Tensor& valid) {
      const auto projected =
          linear_layer(cellstate::dropout(states, o.dropout(), true), lm_proj->weight, lm_proj->bias);
      auto logits_lm = linear_layer(projected, embedding->weight);
      auto nll = torch::nn::functional::cross_entropy(
          logits_lm.reshape({-1, logits_lm.size(2)}), targets.reshape({-1}),
          torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
      return (nll * valid.reshape({-1}).to(nll.dtype())).sum() / valid.sum().clamp_min(1).to(nll.dtype());
    };
    const int64_t T = ids_in.size(1);
    auto fwd = h.slice(2, 0, H).slice(1, 0, T - 1);
    lm_loss = predict(fwd, ids_in.slice(1, 1, T), mask.slice(1, 1, T));
    if (o.bidirectional()) {
      auto bwd = h.slice(2, H, 2 * H).slice(1, 1, T);
      lm_loss = 0.5 * (lm_loss + predict(bwd, ids_in.slice(1, 0, T - 1), mask.slice(1, 1, T)));
    }
  }
  return {logits, lm_loss};
}

}  // namespace cellstate
