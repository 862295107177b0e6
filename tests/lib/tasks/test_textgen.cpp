// cellstate-textgen's library side (tasks/textgen.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "cellstate/util/io.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/tasks/textgen.h"
#include "cellstate/util/text.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::copy_parameters;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;
using cellstate::testing::max_abs_diff;

namespace {

// A tiny model that overfits tests/data/textgen_tiny.txt, trained once.
struct Trained {
  cs::TempDir dir{"cellstate-textgen-test"};
  cs::TrainResult result;
  Trained() {
    cs::TextgenTrainConfig c;
    c.model.dir = dir.file("model");
    c.model.layers = 1;
    c.model.hidden = 64;
    c.model.embed = 32;
    c.model.dropout = 0.0;
    c.train_path = data_path("textgen_tiny.txt");
    c.valid_path = data_path("textgen_tiny.txt");
    c.vocab_size = 60;
    c.spm_type = "char";
    c.bptt = 16;
    c.training.batch_size = 4;
    c.training.lr = 0.02;
    c.training.epochs = 150;
    c.training.patience = 0;
    c.training.lr_schedule = cs::LrScheduleKind::kConstant;
    c.runtime.quiet = true;
    result = cs::train_textgen(c);
  }
  std::string model_dir() const { return dir.file("model"); }
};

const Trained& trained() {
  static const Trained t;
  return t;
}

cs::GenerateOptions greedy(int64_t tokens) {
  cs::GenerateOptions o;
  o.sampling.greedy = true;
  o.max_tokens = tokens;
  return o;
}

}  // namespace

TEST(Textgen, StreamsMarkLineBreaksAndEvaluationCountsEveryCharacter) {
  auto model = cs::TextgenModel::load(trained().model_dir());
  const auto& tok = model.tokenizer();
  const auto nl = model.newline_id();
  auto ids = cs::encode_stream(tok, nl, "ab\n\ncd", false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), nl), 2);
  EXPECT_NE(ids.back(), nl);
  EXPECT_EQ(cs::encode_stream(tok, nl, "ab\n", true).back(), nl);
  // No text produces the line-break piece.
  auto literal = cs::encode_stream(tok, nl, "<nl>", false);
  EXPECT_EQ(std::count(literal.begin(), literal.end(), nl), 0);
  // nats/char = total NLL / characters, whatever the segment length.
  const std::string text = cs::read_text_file(data_path("textgen_tiny.txt"));
  const auto e = cs::evaluate_textgen(model, data_path("textgen_tiny.txt"));
  EXPECT_EQ(e.characters, cs::utf8_length(text));
  std::vector<int64_t> stream{cs::Tokenizer::kBosId};
  for (auto id : cs::encode_stream(tok, nl, text, true)) stream.push_back(id);
  const auto short_segments = cs::evaluate_stream(model.model(), stream, e.characters, 7);
  EXPECT_EQ(short_segments.tokens, e.tokens);
  EXPECT_NEAR(short_segments.nats, e.nats, 1e-3);
  EXPECT_NEAR(e.bits_per_char(), e.nats_per_char() / std::log(2.0), 1e-12);
  EXPECT_NEAR(e.perplexity(), std::exp(e.nats / static_cast<double>(e.tokens)), 1e-9);
  // The overfitted model is nearly certain of its text.
  EXPECT_LT(e.nats_per_char(), 0.1);
}

TEST(Textgen, OverfittedModelGeneratesItsTextBackFromTheFirstWord) {
  auto model = cs::TextgenModel::load(trained().model_dir());
  const std::string text = cs::read_text_file(data_path("textgen_tiny.txt"));
  std::string streamed;
  const auto g = cs::generate_text(model, "Twinkle", greedy(200), 1, [&](const std::string& s) { streamed += s; });
  EXPECT_EQ(streamed, g.text);
  ASSERT_GT(g.text.size(), 100u);
  EXPECT_EQ("Twinkle" + g.text, text.substr(0, 7 + g.text.size()));
  EXPECT_EQ(g.stop_reason, "max-tokens");
  EXPECT_EQ(static_cast<int64_t>(g.ids.size()), 200);
  for (double l : g.logprobs) EXPECT_LE(l, 0.0);
  // Greedy decoding through the built-in implementation gives the same text.
  auto builtin = cs::TextgenModel::load(trained().model_dir(), cs::Implementation::kBuiltin);
  EXPECT_EQ(cs::generate_text(builtin, "Twinkle", greedy(200), 1).text, g.text);
}

TEST(Textgen, StopStringsEndTheOutputAndAreNotPrinted) {
  auto model = cs::TextgenModel::load(trained().model_dir());
  auto o = greedy(200);
  o.stop = {"diamond"};
  std::string streamed;
  const auto g = cs::generate_text(model, "Up", o, 1, [&](const std::string& s) { streamed += s; });
  EXPECT_EQ(g.stop_reason, "stop");
  EXPECT_EQ(g.text, " above the world so high,\nLike a ");
  EXPECT_EQ(streamed, g.text);
  o.stop = {"\n"};
  EXPECT_EQ(cs::generate_text(model, "How I", o, 1).text, " wonder what you are!");
}

TEST(Textgen, SamplingIsReproducibleFromTheSeed) {
  auto model = cs::TextgenModel::load(trained().model_dir());
  cs::GenerateOptions o;
  o.max_tokens = 60;
  o.sampling.temperature = 3.0;  // far from greedy, so seeds matter
  const auto a = cs::generate_text(model, "When", o, 42);
  const auto b = cs::generate_text(model, "When", o, 42);
  const auto c = cs::generate_text(model, "When", o, 43);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_NE(a.ids, c.ids);
}

TEST(Textgen, EmptyLongAndUnknownPromptsBehaveAsDocumented) {
  auto model = cs::TextgenModel::load(trained().model_dir());
  // Empty: generation starts from bos alone, i.e. the start of a text.
  const auto empty = cs::generate_text(model, "", greedy(20), 1);
  EXPECT_EQ(empty.prompt_tokens, 1);
  EXPECT_EQ(empty.text, std::string("Twinkle, twinkle, little star,").substr(0, empty.text.size()));
  // Over-long: only the last max_prompt_tokens tokens are read.
  auto o = greedy(5);
  o.max_prompt_tokens = 10;
  std::string long_prompt;
  for (int i = 0; i < 50; ++i) long_prompt += "Twinkle, twinkle, little star,\n";
  const auto lng = cs::generate_text(model, long_prompt, o, 1);
  EXPECT_TRUE(lng.prompt_truncated);
  EXPECT_EQ(lng.prompt_tokens, 11);  // bos + 10
  // Characters the vocabulary lacks are counted and read as unknown.
  const auto unknown = cs::generate_text(model, "\xE6\xBC\xA2\xE5\xAD\x97 qz", greedy(5), 1);
  EXPECT_GT(unknown.unknown_characters, 0);
  EXPECT_EQ(unknown.ids.size(), 5u);
  EXPECT_NE(exception_of([&] { cs::generate_text(model, "bad \xC3\x28", greedy(5), 1); }).find("invalid UTF-8"),
            std::string::npos);
}

TEST(Textgen, BadInputsAreErrorsNamingTheFile) {
  cs::TempDir dir("cellstate-textgen-bad");
  cs::TextgenTrainConfig c;
  c.model.dir = dir.file("m");
  c.runtime.quiet = true;
  c.train_path = dir.file("missing.txt");
  EXPECT_NE(exception_of([&] { cs::train_textgen(c); }).find("missing.txt"), std::string::npos);
  c.train_path = data_path("empty.txt");
  EXPECT_NE(exception_of([&] { cs::train_textgen(c); }).find("empty input"), std::string::npos);
  c.train_path = data_path("invalid_utf8.txt");
  const auto utf8 = exception_of([&] { cs::train_textgen(c); });
  EXPECT_NE(utf8.find("invalid_utf8.txt:"), std::string::npos) << utf8;
  EXPECT_NE(exception_of([&] { cs::TextgenModel::load(dir.file("nothing")); }), "");
  // A model of another app is refused.
  cs::write_model_config(dir.file("other"), cs::new_model_config("sentiment"));
  cs::write_manifest(dir.file("other"), "sentiment");
  EXPECT_NE(exception_of([&] { cs::TextgenModel::load(dir.file("other")); }).find("sentiment"), std::string::npos);
  auto model = cs::TextgenModel::load(trained().model_dir());
  EXPECT_NE(exception_of([&] { cs::evaluate_textgen(model, data_path("empty.txt")); }).find("empty input"),
            std::string::npos);
}
