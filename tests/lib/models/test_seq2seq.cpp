// The attention encoder-decoder (lib/src/seq2seq.cpp) and the searches
// (lib/src/decoding.cpp).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cellstate/data/batching.h"
#include "cellstate/decode/decoding.h"
#include "cellstate/models/seq2seq.h"
#include "cellstate/util/random.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::max_abs_diff;

namespace {

constexpr int64_t kBos = 2, kEos = 3, kVocab = 12;  // symbols 4..11

// Random sequences of symbols and their reversals.
std::vector<std::vector<int64_t>> random_sequences(int64_t n, uint64_t seed) {
  cs::DataRng rng(seed);
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> s(3 + rng.below(4));
    for (auto& x : s) x = 4 + static_cast<int64_t>(rng.below(kVocab - 4));
    out.push_back(s);
  }
  return out;
}

std::vector<int64_t> reversed(std::vector<int64_t> s) {
  std::reverse(s.begin(), s.end());
  return s;
}

// A tiny model trained to reverse sequences, once for the suite.
cs::Seq2Seq& reverser() {
  static cs::Seq2Seq model = [] {
    torch::manual_seed(1);
    cs::Seq2Seq m(cs::Seq2SeqOptions(kVocab, kVocab).embed(16).hidden(24).dropout(0.0));
    torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(0.01));
    for (int step = 0; step < 400; ++step) {
      auto data = random_sequences(32, 100 + static_cast<uint64_t>(step));
      std::vector<std::vector<int64_t>> in, out;
      for (auto& s : data) {
        in.push_back(s);
        auto r = reversed(s);
        r.insert(r.begin(), kBos);
        r.push_back(kEos);
        out.push_back(r);
      }
      auto src = cs::pad_batch(in);
      auto tgt = cs::pad_batch(out).ids;
      auto logits = m->forward(src.ids, src.lengths, tgt.slice(1, 0, tgt.size(1) - 1));
      auto gold = tgt.slice(1, 1);
      auto loss = torch::nn::functional::cross_entropy(
          logits.reshape({-1, kVocab}), gold.reshape(-1), torch::nn::functional::CrossEntropyFuncOptions().ignore_index(0));
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
    m->eval();
    return m;
  }();
  return model;
}

std::vector<std::vector<cs::Hypothesis>> run(cs::Seq2Seq& m, const std::vector<std::vector<int64_t>>& inputs,
                                             const cs::DecodingOptions& o) {
  auto batch = cs::pad_batch(inputs);
  cs::Seq2SeqStepper stepper(m, batch.ids, batch.lengths);
  std::vector<int64_t> lengths;
  for (const auto& s : inputs) lengths.push_back(static_cast<int64_t>(s.size()));
  return cs::decode(stepper, lengths, o, kBos, kEos);
}

}  // namespace

TEST(Seq2Seq, PaddingIsMaskedAndVariantsBuild) {
  for (auto attention : {cs::Attention::kGeneral, cs::Attention::kAdditive}) {
    torch::manual_seed(3);
    cs::Seq2Seq m(cs::Seq2SeqOptions(kVocab, kVocab).embed(8).hidden(6).layers(2).attention(attention).tie(true));
    m->eval();
    torch::NoGradGuard g;
    auto alone = m->forward(torch::tensor({{5, 6, 7}}, torch::kInt64), torch::tensor({3}, torch::kInt64),
                            torch::tensor({{2, 8, 9}}, torch::kInt64));
    auto both = m->forward(torch::tensor({{4, 5, 6, 7, 8}, {5, 6, 7, 0, 0}}, torch::kInt64),
                           torch::tensor({5, 3}, torch::kInt64), torch::tensor({{2, 4, 4}, {2, 8, 9}}, torch::kInt64));
    EXPECT_EQ(alone.sizes(), (std::vector<int64_t>{1, 3, kVocab}));
    EXPECT_LT(max_abs_diff(alone[0], both[1]), 1e-5);
    // Teacher forcing (the output layer run once over all steps) = the
    // decoder stepped one token at a time, as the searches use it.
    cs::Seq2SeqStepper stepper(m, torch::tensor({{5, 6, 7}}, torch::kInt64), torch::tensor({3}, torch::kInt64));
    for (int64_t t = 0; t < 3; ++t) {
      const auto stepped = torch::log_softmax(
          stepper.logits(torch::tensor({std::vector<int64_t>{2, 8, 9}[t]}, torch::kInt64), nullptr), 1);
      EXPECT_LT(max_abs_diff(stepped[0], torch::log_softmax(alone[0][t], 0)), 1e-5) << t;
    }
  }
  EXPECT_THROW(cs::parse_attention("dot"), std::invalid_argument);
}

// The stepper copies the encoder's memory only when a row's source changes;
// after any reordering (within a sentence's beams, across sentences, dropping
// rows) each row must step exactly as its own history does alone.
TEST(Seq2Seq, StepperReorderingKeepsEachRowsSourceAndState) {
  torch::manual_seed(5);
  cs::Seq2Seq m(cs::Seq2SeqOptions(kVocab, kVocab).embed(8).hidden(6).tie(true));
  m->eval();
  torch::NoGradGuard g;
  const auto source = torch::tensor({{4, 5, 6, 7, 8}, {5, 6, 7, 0, 0}}, torch::kInt64);
  const auto lengths = torch::tensor({5, 3}, torch::kInt64);
  // Row histories: (sentence, tokens fed so far); each select maps new rows to old ones.
  struct Row { int64_t sentence; std::vector<int64_t> fed; };
  std::vector<Row> rows = {{0, {}}, {1, {}}};
  cs::Seq2SeqStepper stepper(m, source, lengths);
  const std::vector<std::vector<int64_t>> selections = {{0, 0, 1, 1}, {1, 0, 3, 2}, {2, 3, 0, 1}, {0, 0, 2, 2}, {1, 3}, {1, 1, 0}};
  for (size_t step = 0; step <= selections.size(); ++step) {
    std::vector<int64_t> tokens;
    for (size_t r = 0; r < rows.size(); ++r) tokens.push_back(4 + static_cast<int64_t>((r + step) % 5));
    const auto logits = stepper.logits(torch::tensor(tokens, torch::kInt64), nullptr);
    for (size_t r = 0; r < rows.size(); ++r) {
      rows[r].fed.push_back(tokens[r]);
      cs::Seq2SeqStepper alone(m, source[rows[r].sentence].unsqueeze(0).narrow(1, 0, lengths[rows[r].sentence].item<int64_t>()),
                               lengths[rows[r].sentence].unsqueeze(0));
      torch::Tensor expected;
      for (auto t : rows[r].fed) expected = alone.logits(torch::tensor({t}, torch::kInt64), nullptr);
      EXPECT_LT(max_abs_diff(logits[static_cast<int64_t>(r)], expected[0]), 1e-5) << "step " << step << " row " << r;
    }
    if (step == selections.size()) break;
    std::vector<Row> next;
    for (auto i : selections[step]) next.push_back(rows[static_cast<size_t>(i)]);
    rows = next;
    stepper.select(torch::tensor(selections[step], torch::kInt64));
  }
}

TEST(Seq2Seq, LearnsToReverseAndDecodesExactly) {
  auto& m = reverser();
  const auto tests = random_sequences(20, 999);
  cs::DecodingOptions greedy;
  greedy.beam = 1;
  cs::DecodingOptions beam;
  beam.beam = 4;
  const auto g = run(m, tests, greedy), b = run(m, tests, beam);
  for (size_t i = 0; i < tests.size(); ++i) {
    EXPECT_EQ(g[i][0].tokens, reversed(tests[i])) << i;
    EXPECT_EQ(b[i][0].tokens, reversed(tests[i])) << i;
    EXPECT_TRUE(g[i][0].finished);
    EXPECT_EQ(g[i][0].attention.size(), tests[i].size() + 1);  // a row per token, eos included
  }
}

TEST(Decoding, BeamOneIsGreedyAndWiderBeamsScoreAtLeastAsHigh) {
  torch::manual_seed(5);
  cs::Seq2Seq m(cs::Seq2SeqOptions(kVocab, kVocab).embed(8).hidden(8).dropout(0.0));
  m->eval();
  const auto inputs = random_sequences(12, 7);
  cs::DecodingOptions o;
  o.length_penalty = 0;
  o.beam = 1;
  const auto one = run(m, inputs, o);
  // Greedy by hand: the argmax at every step.
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto batch = cs::pad_batch({inputs[i]});
    cs::Seq2SeqStepper s(m, batch.ids, batch.lengths);
    std::vector<int64_t> tokens;
    auto prev = torch::tensor({kBos}, torch::kInt64);
    double lp = 0;
    const auto limit = static_cast<size_t>(std::ceil(2.0 * static_cast<double>(inputs[i].size()))) + 10;
    for (;;) {
      auto l = torch::log_softmax(s.logits(prev, nullptr), 1)[0];
      const int64_t best = l.argmax().item<int64_t>();
      lp += l[best].item<double>();
      if (best == kEos) break;
      tokens.push_back(best);
      if (tokens.size() >= limit) break;
      prev = torch::tensor({best}, torch::kInt64);
    }
    EXPECT_EQ(one[i][0].tokens, tokens) << i;
    // The search normalises each step in float64 from float32 logits
    // (decode/decoding.h top_log_probs), the hand loop in float32: the sums
    // agree to float32's rounding of each term.
    EXPECT_NEAR(one[i][0].log_prob, lp, 1e-6 + 1e-7 * std::abs(lp)) << i;
  }
  for (int64_t k : {2, 5}) {
    o.beam = k;
    o.nbest = k;
    const auto wide = run(m, inputs, o);
    for (size_t i = 0; i < inputs.size(); ++i) {
      // Up to float32 rounding: a hypothesis scored in a batch of another
      // shape goes through products summed in another order.
      EXPECT_GE(wide[i][0].log_prob, one[i][0].log_prob - 1e-4) << "beam " << k << " input " << i;
      for (size_t j = 1; j < wide[i].size(); ++j) EXPECT_GE(wide[i][j - 1].score, wide[i][j].score);
    }
  }
}

TEST(Decoding, BatchingNeverChangesAResultAndLimitsHold) {
  torch::manual_seed(6);
  cs::Seq2Seq m(cs::Seq2SeqOptions(kVocab, kVocab).embed(8).hidden(8).dropout(0.0));
  m->eval();
  const auto inputs = random_sequences(9, 11);
  cs::DecodingOptions o;
  o.beam = 3;
  o.max_length_ratio = 0.5;
  o.min_length = 2;
  const auto batched = run(m, inputs, o);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto alone = run(m, {inputs[i]}, o);
    EXPECT_EQ(alone[0][0].tokens, batched[i][0].tokens) << i;
    EXPECT_NEAR(alone[0][0].log_prob, batched[i][0].log_prob, 1e-5);
    const auto limit = static_cast<size_t>(std::ceil(0.5 * static_cast<double>(inputs[i].size()))) + 10;
    for (const auto& h : batched[i]) {
      EXPECT_GE(h.tokens.size(), 2u);
      EXPECT_TRUE(h.finished || h.tokens.size() == limit);
      EXPECT_LE(h.tokens.size(), limit);
    }
  }
  // Sampling is reproducible from the seed.
  cs::DecodingOptions s;
  s.sample = true;
  s.sampling.top_k = 5;
  s.seed = 3;
  const auto a = run(m, inputs, s), b = run(m, inputs, s);
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_EQ(a[i][0].tokens, b[i][0].tokens);
  cs::DecodingOptions bad;
  bad.nbest = 6;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}
