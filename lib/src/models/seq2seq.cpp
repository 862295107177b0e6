#include "cellstate/models/seq2seq.h"

#include "cellstate/nn/attention.h"
#include "cellstate/nn/gemm.h"

#include <torch/torch.h>

#include <stdexcept>

namespace cellstate {

Attention parse_attention(const std::string& name) {
  if (name == "general" || name == "luong") return Attention::kGeneral;
  if (name == "additive" || name == "bahdanau") return Attention::kAdditive;
  throw std::invalid_argument("attention must be general (Luong) or additive (Bahdanau), got '" + name + "'");
}

Encoded Encoded::select(const torch::Tensor& rows) const {
  Encoded e = select_state(rows);
  e.source = AttentionSource(source.keys().index_select(0, rows), source.memory().index_select(0, rows));
  e.mask = mask.index_select(0, rows);
  return e;
}

Encoded Encoded::select_state(const torch::Tensor& rows) const {
  Encoded e;
  e.source = source;
  e.mask = mask;
  for (const auto& t : h) e.h.push_back(t.index_select(0, rows));
  for (const auto& t : c) e.c.push_back(t.index_select(0, rows));
  e.feed = feed.index_select(0, rows);
  return e;
}

Seq2SeqImpl::Seq2SeqImpl(Seq2SeqOptions options_) : options(std::move(options_)) { reset(); }

void Seq2SeqImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.source_vocab() > 4 && o.target_vocab() > 4, "Seq2Seq: vocabularies must have > 4 entries, got ",
              o.source_vocab(), " and ", o.target_vocab());
  TORCH_CHECK(o.embed() > 0 && o.hidden() > 0 && o.layers() > 0, "Seq2Seq: embed, hidden and layers must be positive");
  TORCH_CHECK(o.dropout() >= 0 && o.dropout() < 1, "Seq2Seq: dropout must be in [0, 1), got ", o.dropout());
  TORCH_CHECK(!o.share_embeddings() || o.source_vocab() == o.target_vocab(),
              "Seq2Seq: shared embeddings need one vocabulary, got ", o.source_vocab(), " and ", o.target_vocab());
  const int64_t D = decoder_size();
  source_embedding = register_module(
      "source_embedding",
      torch::nn::Embedding(torch::nn::EmbeddingOptions(o.source_vocab(), o.embed()).padding_idx(0)));
  target_embedding =
      o.share_embeddings()
          ? source_embedding
          : register_module("target_embedding", torch::nn::Embedding(
                                                    torch::nn::EmbeddingOptions(o.target_vocab(), o.embed()).padding_idx(0)));
  encoder = make_recurrent(RecurrentOptions(o.embed(), o.hidden())
                               .impl(o.impl())
                               .num_layers(o.layers())
                               .bidirectional(true)
                               .dropout(o.layers() > 1 ? o.dropout() : 0.0)
                               .batch_first(true));
  register_module("encoder", encoder);
  bridge_h.clear();
  bridge_c.clear();
  decoder.clear();
  for (int64_t l = 0; l < o.layers(); ++l) {
    const auto n = std::to_string(l);
    bridge_h.push_back(register_module("bridge_h_l" + n, torch::nn::Linear(D, D)));
    bridge_c.push_back(register_module("bridge_c_l" + n, torch::nn::Linear(D, D)));
    const int64_t in = l == 0 ? o.embed() + (o.input_feeding() ? D : 0) : D;
    decoder.push_back(register_module("decoder_l" + n, LSTMCell(in, D)));
  }
  attention_key = register_module("attention_key",
                                  torch::nn::Linear(torch::nn::LinearOptions(D, D).bias(o.attention() == Attention::kAdditive)));
  if (o.attention() == Attention::kAdditive) {
    attention_query = register_module("attention_query", torch::nn::Linear(torch::nn::LinearOptions(D, D).bias(false)));
    attention_score = register_module("attention_score", torch::nn::Linear(torch::nn::LinearOptions(D, 1).bias(false)));
  }
  combine = register_module("combine", torch::nn::Linear(torch::nn::LinearOptions(2 * D, D).bias(false)));
  if (o.tie()) {
    if (o.embed() != D) projection = register_module("projection", torch::nn::Linear(D, o.embed()));
    output_bias = register_parameter("output_bias", torch::zeros({o.target_vocab()}));
  } else {
    output = register_module("output", torch::nn::Linear(D, o.target_vocab()));
  }
  drop = register_module("drop", Dropout(o.dropout()));
  torch::NoGradGuard no_grad;
  for (auto* e : {&source_embedding, &target_embedding}) {
    (*e)->weight.normal_(0.0, 0.1);
    (*e)->weight[0].zero_();
  }
}

Encoded Seq2SeqImpl::encode(const torch::Tensor& source, const torch::Tensor& lengths) {
  TORCH_CHECK(source.dim() == 2 && source.scalar_type() == torch::kInt64,
              "Seq2Seq::encode: expected int64 source ids [batch, time], got ", source.scalar_type(), " ",
              source.sizes());
  const int64_t B = source.size(0), S = source.size(1), H = options.hidden();
  auto out = encoder->forward(drop(source_embedding(source)), lengths);
  Encoded e;
  // [B, S, 2H], made contiguous once: every step reads it row by row.
  const auto memory = out.output.contiguous();
  e.mask = torch::arange(S).unsqueeze(0) < lengths.unsqueeze(1);
  e.source = AttentionSource(cellstate::linear(memory, attention_key->weight, attention_key->bias), memory);
  // Final states [layers * 2, B, H] -> per layer [B, 2H] (forward; backward).
  auto h = out.state.h.view({options.layers(), 2, B, H});
  auto c = out.state.c.view({options.layers(), 2, B, H});
  for (int64_t l = 0; l < options.layers(); ++l) {
    const auto& bh = bridge_h[static_cast<size_t>(l)];
    const auto& bc = bridge_c[static_cast<size_t>(l)];
    e.h.push_back(torch::tanh(linear_layer(torch::cat({h[l][0], h[l][1]}, 1), bh->weight, bh->bias)));
    e.c.push_back(torch::tanh(linear_layer(torch::cat({c[l][0], c[l][1]}, 1), bc->weight, bc->bias)));
  }
  e.feed = torch::zeros({B, decoder_size()}, memory.options());
  return e;
}

torch::Tensor Seq2SeqImpl::step(const torch::Tensor& previous, Encoded& s, torch::Tensor* attention) {
  return logits(attend(previous, s, attention));
}

torch::Tensor Seq2SeqImpl::attend(const torch::Tensor& previous, Encoded& s, torch::Tensor* attention) {
  const int64_t B = s.source.memory().size(0);
  TORCH_CHECK(previous.dim() == 1 && previous.size(0) == B, "Seq2Seq::step: expected previous tokens [", B,
              "], got ", previous.sizes());
  return attend_embedded(drop(target_embedding(previous)), s, attention);
}

torch::Tensor Seq2SeqImpl::attend_embedded(const torch::Tensor& embedded, Encoded& s, torch::Tensor* attention) {
  return attend_with(embedded, s, nullptr, attention);
}

torch::Tensor Seq2SeqImpl::attend_with(const torch::Tensor& embedded, Encoded& s, const StepDecoderWeights* weights,
                                       torch::Tensor* attention) {
  const int64_t B = s.source.memory().size(0);
  TORCH_CHECK(embedded.dim() == 2 && embedded.size(0) == B && embedded.size(1) == options.embed(),
              "Seq2Seq::step: expected embeddings [", B, ", ", options.embed(), "], got ", embedded.sizes());
  auto x = embedded;
  if (options.input_feeding()) x = torch::cat({x, s.feed}, 1);
  for (size_t l = 0; l < decoder.size(); ++l) {
    const auto state = std::make_tuple(s.h[l], s.c[l]);
    auto [h, c] = weights != nullptr ? decoder[l]->forward_with(x, state, weights->cells[l]) : decoder[l](x, state);
    s.h[l] = h;
    s.c[l] = c;
    x = l + 1 < decoder.size() ? drop(h) : h;
  }
  const auto& query = s.h.back();  // [B, D]
  torch::Tensor scores;
  if (options.attention() == Attention::kGeneral) {
    scores = s.source.scores(query);  // [B, S]
  } else {
    const auto q = cellstate::linear(query, attention_query->weight);
    scores = linear_layer(torch::tanh(s.source.keys() + q.unsqueeze(1)), attention_score->weight).squeeze(2);
  }
  scores = scores.masked_fill(s.mask.logical_not(), -std::numeric_limits<float>::infinity());
  auto a = torch::softmax(scores, 1);
  if (attention) *attention = a;
  auto context = s.source.context(a);  // [B, 2H]
  const auto& w_c = weights != nullptr ? weights->combine[0] : combine->weight;
  auto attended = torch::tanh(cellstate::linear(torch::cat({context, query}, 1), w_c));
  s.feed = attended;
  return attended;
}

torch::Tensor Seq2SeqImpl::logits(const torch::Tensor& attended) {
  auto y = drop(attended);
  if (options.tie()) {
    if (projection) y = cellstate::linear(y, projection->weight, projection->bias);
    return cellstate::linear(y, target_embedding->weight, output_bias);
  }
  return cellstate::linear(y, output->weight, output->bias);
}

torch::Tensor Seq2SeqImpl::decode_states(const torch::Tensor& source, const torch::Tensor& lengths,
                                         const torch::Tensor& target_in) {
  TORCH_CHECK(target_in.dim() == 2 && target_in.size(0) == source.size(0),
              "Seq2Seq: expected target [", source.size(0), ", T], got ", target_in.sizes());
  auto state = encode(source, lengths);
  // [B, E] per position; unbind's backward stacks their T gradients at once
  // (select's would make a zero [B, T, E] per position, summed T times).
  const auto embedded = drop(target_embedding(target_in)).unbind(1);
  // The decoder's weights are read at every step: their gradients are
  // summed once, after all the steps (nn/step_weights.h).
  StepDecoderWeights weights{{}, StepWeights({combine->weight})};
  for (const auto& cell : decoder) weights.cells.push_back(cell->step_weights());
  std::vector<torch::Tensor> states;
  for (const auto& e : embedded) states.push_back(attend_with(e, state, &weights, nullptr));
  return torch::stack(states, 1);
}

torch::Tensor Seq2SeqImpl::forward(const torch::Tensor& source, const torch::Tensor& lengths,
                                   const torch::Tensor& target_in) {
  return logits(decode_states(source, lengths, target_in));
}

Seq2SeqStepper::Seq2SeqStepper(Seq2Seq model, const torch::Tensor& source, const torch::Tensor& lengths)
    : model_(std::move(model)) {
  torch::NoGradGuard no_grad;
  state_ = model_->encode(source, lengths);
  sources_ = torch::arange(source.size(0), torch::kInt64);
}

torch::Tensor Seq2SeqStepper::logits(const torch::Tensor& previous, torch::Tensor* attention) {
  torch::NoGradGuard no_grad;
  return model_->step(previous, state_, attention);
}

void Seq2SeqStepper::select(const torch::Tensor& rows) {
  auto sources = sources_.index_select(0, rows);
  state_ = torch::equal(sources, sources_) ? state_.select_state(rows) : state_.select(rows);
  sources_ = std::move(sources);
}

}  // namespace cellstate
