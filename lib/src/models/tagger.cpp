#include "cellstate/models/tagger.h"

#include "cellstate/nn/gemm.h"

#include <torch/torch.h>

#include <cctype>
#include <map>

namespace cellstate {

Casing word_casing(const std::string& word) {
  int upper = 0, lower = 0, digit = 0, other = 0;
  for (unsigned char c : word) {
    if (std::isupper(c)) ++upper;
    else if (std::islower(c)) ++lower;
    else if (std::isdigit(c)) ++digit;
    else if (c >= 0x80) ++lower;  // a non-ASCII letter counts as a letter
    else ++other;
  }
  const int letters = upper + lower;
  if (digit > 0 && letters == 0) return other == 0 || digit >= other ? Casing::kNumber : Casing::kOther;
  if (digit > 0) return Casing::kHasDigit;
  if (letters == 0) return Casing::kOther;
  if (upper == 0) return Casing::kLower;
  if (lower == 0) return Casing::kUpper;
  if (std::isupper(static_cast<unsigned char>(word[0])) && upper == 1) return Casing::kTitle;
  return Casing::kMixed;
}

TaggerBatch make_tagger_batch(const std::vector<const TaggerInput*>& sentences) {
  TORCH_CHECK(!sentences.empty(), "make_tagger_batch: no sentences");
  const auto B = static_cast<int64_t>(sentences.size());
  int64_t T = 0, L = 0;
  for (const auto* s : sentences) {
    TORCH_CHECK(!s->words.empty(), "make_tagger_batch: empty sentence");
    T = std::max<int64_t>(T, static_cast<int64_t>(s->words.size()));
    for (const auto& c : s->chars) L = std::max<int64_t>(L, static_cast<int64_t>(c.size()));
  }
  const bool chars = !sentences.front()->chars.empty();
  const bool pieces = !sentences.front()->pieces.empty();
  L = std::max<int64_t>(L, 1);
  std::vector<int64_t> words(static_cast<size_t>(B * T), 0), casing(static_cast<size_t>(B * T), 0), lengths;
  std::vector<int64_t> char_ids, char_lengths, char_index, piece_ids, offsets;
  // A word's character features depend on its characters alone: each
  // distinct sequence goes through the character recurrence once (a batch
  // repeats many of its words: "the", ",", ".").
  std::map<std::vector<int64_t>, int64_t> char_rows;
  for (int64_t i = 0; i < B; ++i) {
    const auto& s = *sentences[static_cast<size_t>(i)];
    const auto len = static_cast<int64_t>(s.words.size());
    lengths.push_back(len);
    for (int64_t t = 0; t < len; ++t) {
      const auto w = static_cast<size_t>(t);
      words[static_cast<size_t>(i * T + t)] = s.words[w];
      casing[static_cast<size_t>(i * T + t)] = s.casing[w];
      if (chars) {
        TORCH_CHECK(!s.chars[w].empty(), "make_tagger_batch: a word without characters");
        const auto [it, added] = char_rows.try_emplace(s.chars[w], static_cast<int64_t>(char_lengths.size()));
        if (added) {
          char_ids.insert(char_ids.end(), s.chars[w].begin(), s.chars[w].end());
          char_ids.resize(char_ids.size() + static_cast<size_t>(L) - s.chars[w].size(), 0);
          char_lengths.push_back(static_cast<int64_t>(s.chars[w].size()));
        }
        char_index.push_back(it->second);
      }
      if (pieces) {
        TORCH_CHECK(!s.pieces[w].empty(), "make_tagger_batch: a word without pieces");
        offsets.push_back(static_cast<int64_t>(piece_ids.size()));
        piece_ids.insert(piece_ids.end(), s.pieces[w].begin(), s.pieces[w].end());
      }
    }
  }
  const auto i64 = torch::kInt64;
  TaggerBatch b;
  b.words = torch::tensor(words, i64).reshape({B, T});
  b.casing = torch::tensor(casing, i64).reshape({B, T});
  b.lengths = torch::tensor(lengths, i64);
  if (chars) {
    b.chars = torch::tensor(char_ids, i64).reshape({static_cast<int64_t>(char_lengths.size()), L});
    b.char_lengths = torch::tensor(char_lengths, i64);
    b.char_index = torch::tensor(char_index, i64);
  }
  if (pieces) {
    b.pieces = torch::tensor(piece_ids, i64);
    b.piece_offsets = torch::tensor(offsets, i64);
  }
  b.mask = torch::arange(T).unsqueeze(0) < b.lengths.unsqueeze(1);
  return b;
}

SequenceTaggerImpl::SequenceTaggerImpl(SequenceTaggerOptions options_) : options(std::move(options_)) { reset(); }

void SequenceTaggerImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.word_vocab() > 2 && o.num_tags() > 1, "SequenceTagger: expected > 2 words and > 1 tags, got ",
              o.word_vocab(), " and ", o.num_tags());
  TORCH_CHECK(o.word_embed() > 0 && o.hidden() > 0 && o.layers() > 0,
              "SequenceTagger: word_embed, hidden and layers must be positive");
  TORCH_CHECK(o.dropout() >= 0 && o.dropout() < 1, "SequenceTagger: dropout must be in [0, 1), got ", o.dropout());
  int64_t features = o.word_embed();
  word_embedding = register_module(
      "word_embedding", torch::nn::Embedding(torch::nn::EmbeddingOptions(o.word_vocab(), o.word_embed()).padding_idx(0)));
  if (o.char_vocab() > 0) {
    char_embedding = register_module(
        "char_embedding", torch::nn::Embedding(torch::nn::EmbeddingOptions(o.char_vocab(), o.char_embed()).padding_idx(0)));
    char_rnn = make_recurrent(RecurrentOptions(o.char_embed(), o.char_hidden())
                                  .kind(o.kind())
                                  .impl(o.impl())
                                  .bidirectional(true)
                                  .batch_first(true));
    register_module("char_rnn", char_rnn);
    features += 2 * o.char_hidden();
  }
  if (o.piece_vocab() > 0) {
    piece_embedding = register_module("piece_embedding", torch::nn::Embedding(o.piece_vocab(), o.piece_embed()));
    features += o.piece_embed();
  }
  if (o.casing_embed() > 0) {
    casing_embedding = register_module(
        "casing_embedding", torch::nn::Embedding(static_cast<int64_t>(Casing::kCount), o.casing_embed()));
    features += o.casing_embed();
  }
  rnn = make_recurrent(RecurrentOptions(features, o.hidden())
                           .kind(o.kind())
                           .impl(o.impl())
                           .num_layers(o.layers())
                           .bidirectional(true)
                           .dropout(o.layers() > 1 ? o.dropout() : 0.0)
                           .batch_first(true));
  register_module("rnn", rnn);
  output = register_module("output", torch::nn::Linear(2 * o.hidden(), o.num_tags()));
  drop = register_module("drop", Dropout(o.dropout()));
  if (o.crf()) crf = register_module("crf", CRF(CRFOptions(o.num_tags())));
  torch::NoGradGuard no_grad;
  const double scale = std::sqrt(3.0 / static_cast<double>(o.word_embed()));
  word_embedding->weight.uniform_(-scale, scale);
  word_embedding->weight[0].zero_();
}

torch::Tensor SequenceTaggerImpl::emissions(const TaggerBatch& b) {
  const auto B = b.words.size(0), T = b.words.size(1);
  std::vector<torch::Tensor> parts{word_embedding(b.words)};
  // Per-word features of the N real words, scattered into [B, T, F].
  auto scatter = [&](const torch::Tensor& per_word) {
    auto out = torch::zeros({B, T, per_word.size(1)}, per_word.options());
    return out.index_put({b.mask}, per_word);
  };
  if (char_rnn) {
    TORCH_CHECK(b.chars.defined(), "SequenceTagger: the model reads characters, the batch has none");
    auto out = char_rnn->forward(char_embedding(b.chars), b.char_lengths);
    parts.push_back(scatter(torch::cat({out.state.h[0], out.state.h[1]}, 1).index_select(0, b.char_index)));
  }
  if (piece_embedding) {
    TORCH_CHECK(b.pieces.defined(), "SequenceTagger: the model reads pieces, the batch has none");
    namespace F = torch::nn::functional;
    auto pooled = F::embedding_bag(b.pieces, piece_embedding->weight,
                                   F::EmbeddingBagFuncOptions().offsets(b.piece_offsets).mode(torch::kMean));
    parts.push_back(scatter(pooled));
  }
  if (casing_embedding) parts.push_back(casing_embedding(b.casing));
  auto x = drop(torch::cat(parts, 2));
  auto h = rnn->forward(x, b.lengths).output;
  return linear_layer(drop(h), output->weight, output->bias) * b.mask.unsqueeze(2).to(torch::kFloat);
}

torch::Tensor SequenceTaggerImpl::loss(const TaggerBatch& batch, const torch::Tensor& tags) {
  return loss(batch, tags, emissions(batch));
}

torch::Tensor SequenceTaggerImpl::loss(const TaggerBatch& batch, const torch::Tensor& tags, const torch::Tensor& e) {
  if (crf) return crf->neg_log_likelihood(e, tags, batch.mask).mean();
  auto logp = torch::log_softmax(e, 2).gather(2, tags.clamp_min(0).unsqueeze(2)).squeeze(2);
  return -(logp * batch.mask.to(torch::kFloat)).sum() / batch.mask.sum();
}

std::vector<std::vector<int64_t>> SequenceTaggerImpl::decode(const TaggerBatch& batch, const torch::Tensor& e) {
  if (crf) return crf->viterbi(e, batch.mask);
  auto best = e.argmax(2);
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < e.size(0); ++i) {
    const auto len = batch.lengths[i].item<int64_t>();
    auto row = best[i].slice(0, 0, len).contiguous();
    out.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + len);
  }
  return out;
}

}  // namespace cellstate
