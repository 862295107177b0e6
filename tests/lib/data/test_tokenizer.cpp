// SentencePiece through the dlmopen'd shim (lib/src/tokenizer.cpp), in the
// same process as LibTorch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "cellstate/util/io.h"
#include "cellstate/data/tokenizer.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;

namespace {
const cs::Tokenizer& unigram() {
  static const cs::Tokenizer tok = [] {
    cs::TokenizerTrainOptions o;
    o.vocab_size = 120;
    return cs::Tokenizer::train({data_path("text.txt")}, o);
  }();
  return tok;
}
}  // namespace

TEST(Tokenizer, SpecialIdsAreFixed) {
  const auto& tok = unigram();
  EXPECT_EQ(tok.id_to_piece(0), "<pad>");
  EXPECT_EQ(tok.id_to_piece(1), "<unk>");
  EXPECT_EQ(tok.id_to_piece(2), "<s>");
  EXPECT_EQ(tok.id_to_piece(3), "</s>");
  EXPECT_GT(tok.vocab_size(), 50);
  EXPECT_LE(tok.vocab_size(), 120);
  // LibTorch still works in the same process (the reason for the shim).
  EXPECT_EQ(torch::ones({3}).sum().item<float>(), 3.0f);
}

TEST(Tokenizer, EncodeDecodeRoundTrip) {
  const auto& tok = unigram();
  const std::string text = "The pen is mightier than the sword.";
  const auto ids = tok.encode(text);
  ASSERT_FALSE(ids.empty());
  for (auto id : ids) {
    EXPECT_GE(id, 1);
    EXPECT_LT(id, tok.vocab_size());
  }
  EXPECT_EQ(tok.decode(ids), text);
  // pad, bos and eos are skipped when decoding.
  auto framed = ids;
  framed.insert(framed.begin(), cs::Tokenizer::kBosId);
  framed.push_back(cs::Tokenizer::kEosId);
  framed.push_back(cs::Tokenizer::kPadId);
  EXPECT_EQ(tok.decode(framed), text);
  const auto pieces = tok.encode_pieces(text);
  ASSERT_EQ(pieces.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(tok.piece_to_id(pieces[i]), ids[i]);
  EXPECT_EQ(tok.piece_to_id("no-such-piece-here"), cs::Tokenizer::kUnkId);
  EXPECT_TRUE(tok.encode("").empty());
  // Multi-byte text survives the C boundary.
  EXPECT_EQ(tok.decode(tok.encode("Zwei M\xC3\xA4nner")), "Zwei M\xC3\xA4nner");
}

TEST(Tokenizer, SamplingIsReproducibleAndVaries) {
  const auto& tok = unigram();
  const std::string text = "The early bird catches the worm, but the second mouse gets the cheese.";
  std::vector<std::vector<int64_t>> first, second;
  for (uint32_t i = 0; i < 20; ++i) first.push_back(tok.sample_encode(text, 0.1, 100 + i));
  for (uint32_t i = 0; i < 20; ++i) second.push_back(tok.sample_encode(text, 0.1, 100 + i));
  EXPECT_EQ(first, second);
  EXPECT_NE(first[0], first[1]);
  int different = 0;
  for (const auto& s : first) {
    EXPECT_EQ(tok.decode(s), text);
    different += s != tok.encode(text);
  }
  EXPECT_GT(different, 0) << "sampling never left the best segmentation";
}

TEST(Tokenizer, CharModelAndUserSymbols) {
  cs::TokenizerTrainOptions o;
  o.model_type = "char";
  o.vocab_size = 200;
  o.user_symbols = {"<sep>"};
  const auto tok = cs::Tokenizer::train({data_path("text.txt")}, o);
  const auto pieces = tok.encode_pieces("ab<sep>c");
  EXPECT_EQ(pieces, (std::vector<std::string>{"\xE2\x96\x81", "a", "b", "<sep>", "c"}));
}

TEST(Tokenizer, SaveLoadAndTrainOnMemory) {
  cs::TempDir dir;
  const auto& tok = unigram();
  tok.save(dir.file("spm.model"));
  const auto loaded = cs::Tokenizer::load(dir.file("spm.model"));
  EXPECT_EQ(loaded.vocab_size(), tok.vocab_size());
  EXPECT_EQ(loaded.encode("Two heads are better than one."), tok.encode("Two heads are better than one."));
  cs::TokenizerTrainOptions o;
  o.vocab_size = 40;
  const auto small = cs::Tokenizer::train_on({"aaa bbb", "bbb ccc\nddd", "aaa ccc"}, o);
  EXPECT_EQ(small.decode(small.encode("aaa ddd")), "aaa ddd");
}

TEST(Tokenizer, BadModelFilesAreClearErrors) {
  EXPECT_NE(exception_of([] { cs::Tokenizer::load(data_path("missing.model")); })
                .find("missing.model: missing SentencePiece model file"),
            std::string::npos);
  EXPECT_NE(exception_of([] { cs::Tokenizer::load(data_path("empty.txt")); })
                .find("empty.txt: empty file, expected a SentencePiece model"),
            std::string::npos);
  EXPECT_NE(exception_of([] { cs::Tokenizer::load(data_path("corrupt.model")); })
                .find("corrupt.model: not a valid SentencePiece model"),
            std::string::npos);
  EXPECT_NE(exception_of([] { cs::Tokenizer::train({data_path("empty.txt")}, {}); })
                .find("empty.txt: no text to train a tokenizer on"),
            std::string::npos);
  cs::TokenizerTrainOptions bad;
  bad.model_type = "wordpiece";
  EXPECT_THROW(cs::Tokenizer::train({data_path("text.txt")}, bad), std::invalid_argument);
}
