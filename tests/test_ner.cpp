// cellstate-ner's library side (lib/src/word_split.cpp, tagger.cpp, ner.cpp).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "cellstate/io.h"
#include "cellstate/ner.h"
#include "cellstate/word_split.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::copy_parameters;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;
using cellstate::testing::max_abs_diff;

namespace {

std::vector<std::vector<std::string>> words_of(const std::string& text) {
  std::vector<std::vector<std::string>> out;
  for (const auto& s : cs::split_words(text)) {
    out.emplace_back();
    for (const auto& t : s) out.back().push_back(t.text);
  }
  return out;
}

// A tiny tagger that overfits tests/data/ner_tiny.conll, trained once per decoder.
struct Trained {
  cs::TempDir dir{"cellstate-ner-test"};
  explicit Trained(const std::string& decoder) {
    cs::NerTrainConfig c;
    c.model.dir = dir.file("model");
    c.model.embed = 16;
    c.model.hidden = 24;
    c.model.dropout = 0.0;
    c.char_embed = 8;
    c.char_hidden = 8;
    c.piece_vocab = 60;
    c.piece_embed = 8;
    c.rare_word_dropout = 0.0;
    c.decoder = decoder;
    c.train_path = data_path("ner_tiny.conll");
    c.dev_path = data_path("ner_tiny.conll");
    c.training.epochs = 60;
    c.training.patience = 0;
    c.training.batch_size = 4;
    c.training.lr = 0.02;
    c.runtime.quiet = true;
    result = cs::train_ner(c);
  }
  std::string model_dir() const { return dir.file("model"); }
  cs::TrainResult result;
};

const Trained& crf_model() {
  static const Trained t("crf");
  return t;
}

}  // namespace

TEST(WordSplit, SplitsLikeConllWithOffsets) {
  EXPECT_EQ(words_of("EU rejects German call to boycott British lamb."),
            (std::vector<std::vector<std::string>>{
                {"EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."}}));
  EXPECT_EQ(words_of("Germany's Mr. Smith (Reuters) said: \"U.S. firms don't pay $1,200.50 in 1996-97.\" He left."),
            (std::vector<std::vector<std::string>>{
                {"Germany", "'s", "Mr.", "Smith", "(", "Reuters", ")", "said", ":", "\"", "U.S.", "firms", "do",
                 "n't", "pay", "$1,200.50", "in", "1996-97", ".", "\""},
                {"He", "left", "."}}));
  // Line breaks end sentences; "a.m." and initials keep their dots; no split before lower case.
  EXPECT_EQ(words_of("J. Smith arrived at 9 a.m. and left\nthen came back... Later, O'Neill won."),
            (std::vector<std::vector<std::string>>{{"J.", "Smith", "arrived", "at", "9", "a.m.", "and", "left"},
                                                   {"then", "came", "back", "..."},
                                                   {"Later", ",", "O'Neill", "won", "."}}));
  // Offsets in bytes and in characters point at each token, multi-byte UTF-8 included.
  const std::string text = "Zürich – «José» met Ann.";
  for (const auto& s : cs::split_words(text))
    for (const auto& t : s) {
      EXPECT_EQ(text.substr(t.begin, t.end - t.begin), t.text);
      EXPECT_EQ(cs::utf8_length(std::string_view(text).substr(0, t.begin)), t.char_begin);
      EXPECT_EQ(t.char_end - t.char_begin, cs::utf8_length(t.text));
    }
  const auto zs = cs::split_words(text);
  ASSERT_EQ(zs.size(), 1u);
  EXPECT_EQ(zs[0][2].text, "\xC2\xAB");  // «
  EXPECT_EQ(zs[0][3].text, "José");
  EXPECT_EQ(zs[0][3].char_begin, 10);
  EXPECT_TRUE(cs::split_words("").empty());
  EXPECT_TRUE(cs::split_words("  \n \t ").empty());
}

TEST(Tagger, CasingClasses) {
  EXPECT_EQ(cs::word_casing("paris"), cs::Casing::kLower);
  EXPECT_EQ(cs::word_casing("EU"), cs::Casing::kUpper);
  EXPECT_EQ(cs::word_casing("Paris"), cs::Casing::kTitle);
  EXPECT_EQ(cs::word_casing("McDonald"), cs::Casing::kMixed);
  EXPECT_EQ(cs::word_casing("1996"), cs::Casing::kNumber);
  EXPECT_EQ(cs::word_casing("1,200.50"), cs::Casing::kNumber);
  EXPECT_EQ(cs::word_casing("F16"), cs::Casing::kHasDigit);
  EXPECT_EQ(cs::word_casing("."), cs::Casing::kOther);
}

TEST(Tagger, SentenceAloneEqualsPaddedBatchAndBuiltinEqualsCustom) {
  torch::manual_seed(2);
  auto options = cs::SequenceTaggerOptions(30, 5).word_embed(6).hidden(5).char_vocab(12).char_embed(4).char_hidden(3)
                     .piece_vocab(20).piece_embed(4).casing_embed(3).dropout(0.3);
  cs::SequenceTagger custom(options);
  cs::SequenceTagger builtin(options.impl(cs::Implementation::kBuiltin));
  copy_parameters(*custom, *builtin);
  custom->eval();
  builtin->eval();
  cs::TaggerInput a{{3, 4, 5}, {1, 2, 3}, {{2, 3}, {4}, {5, 6, 7}}, {{1}, {2, 3}, {4}}};
  cs::TaggerInput b{{6, 7, 8, 9, 10}, {1, 1, 1, 1, 1}, {{2}, {3}, {4, 5}, {6}, {7, 8, 9, 10}},
                    {{5}, {6}, {7}, {8, 9}, {10}}};
  torch::NoGradGuard g;
  const auto alone = custom->emissions(cs::make_tagger_batch({&a}));
  const auto batch = cs::make_tagger_batch({&b, &a});
  const auto both = custom->emissions(batch);
  EXPECT_LT(max_abs_diff(alone[0], both[1].slice(0, 0, 3)), 1e-5);
  EXPECT_EQ(both[1].slice(0, 3, 5).abs().sum().item<double>(), 0.0);  // padding
  EXPECT_LT(max_abs_diff(both, builtin->emissions(batch)), 1e-5);
  EXPECT_EQ(custom->decode(cs::make_tagger_batch({&a}), alone)[0], custom->decode(batch, both)[1]);
}

TEST(Ner, DetectsTheTagScheme) {
  auto data = cs::read_conll(data_path("ner_tiny.conll"));
  EXPECT_EQ(cs::detect_tag_scheme(data), cs::TagScheme::kIOB1);
  for (auto& s : data) s.tags = cs::convert_tags(s.tags, cs::TagScheme::kIOB1, cs::TagScheme::kIOB2);
  EXPECT_EQ(cs::detect_tag_scheme(data), cs::TagScheme::kIOB2);
  for (auto& s : data) s.tags = cs::convert_tags(s.tags, cs::TagScheme::kIOB2, cs::TagScheme::kIOBES);
  EXPECT_EQ(cs::detect_tag_scheme(data), cs::TagScheme::kIOBES);
}

TEST(Ner, TinyTaggerLearnsItsDataAndEvaluatesAsConlleval) {
  const auto& t = crf_model();
  EXPECT_DOUBLE_EQ(t.result.best_score, 100.0);
  auto model = cs::NerModel::load(t.model_dir());
  EXPECT_EQ(model.scheme(), cs::TagScheme::kIOBES);
  cs::TempDir out("cellstate-ner-eval");
  const auto report = cs::evaluate_ner(model, data_path("ner_tiny.conll"), {}, "auto", out.file("conlleval.txt"));
  EXPECT_DOUBLE_EQ(report.overall.f1(), 100.0);
  EXPECT_EQ(report.overall.gold, 19);
  EXPECT_DOUBLE_EQ(report.accuracy(), 100.0);
  // conlleval's input: token gold predicted, predictions in the data's scheme (IOB1).
  const auto lines = cs::read_text_file(out.file("conlleval.txt"));
  EXPECT_EQ(lines.substr(0, 29), "EU I-ORG I-ORG\nrejects O O\nGe");
  EXPECT_NE(lines.find("Jones B-PER B-PER\n"), std::string::npos);
  // The built-in implementation tags the same.
  auto builtin = cs::NerModel::load(t.model_dir(), cs::Implementation::kBuiltin);
  const auto a = model.tag({{"Smith", "Jones", "won", "in", "Paris", "."}});
  const auto b = builtin.tag({{"Smith", "Jones", "won", "in", "Paris", "."}});
  EXPECT_EQ(a[0].tags, b[0].tags);
  EXPECT_EQ(a[0].tags, (std::vector<std::string>{"S-PER", "S-PER", "O", "O", "S-LOC", "O"}));
  ASSERT_EQ(a[0].entities.size(), 3u);
  for (const auto& e : a[0].entities) {
    EXPECT_GT(e.confidence, 0.5);
    EXPECT_LE(e.confidence, 1.0 + 1e-9);
  }
}

TEST(Ner, JsonOffsetsPointAtTheEntityTextInRawInput) {
  auto model = cs::NerModel::load(crf_model().model_dir());
  std::ostringstream out, err;
  cs::NerPredictOptions o;
  EXPECT_EQ(cs::predict_ner(model, {data_path("ner_raw.txt")}, o, out, err), 0);
  std::istringstream lines(out.str());
  std::string line;
  std::vector<std::string> input;
  {
    cs::LineReader r(data_path("ner_raw.txt"));
    std::string l;
    while (r.next(l)) input.push_back(l);
  }
  size_t n = 0, entities = 0;
  std::vector<std::string> found;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["line"].get<size_t>(), n + 1);
    const auto& text = input[n];
    for (const auto& e : j["entities"]) {
      const auto start = e["start"].get<int64_t>(), end = e["end"].get<int64_t>();
      // Character offsets: the code points [start, end) of the line are the entity's text.
      std::string sub;
      int64_t k = 0;
      for (size_t i = 0; i < text.size(); ++i) {
        if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) ++k;
        if (k > start && k <= end) sub += text[i];
      }
      EXPECT_EQ(sub, e["text"].get<std::string>());
      found.push_back(e["type"].get<std::string>() + ":" + sub);
      ++entities;
    }
    ++n;
  }
  EXPECT_EQ(n, 3u);  // the empty line is kept, so output stays line-aligned
  EXPECT_EQ(found, (std::vector<std::string>{"PER:Peter Blackburn", "LOC:Zürich", "PER:José Müller", "ORG:Siemens",
                                             "LOC:München", "PER:Anna Karenina", "LOC:Moscow"}));
}

TEST(Ner, OutputFormatsAndBadInput) {
  auto model = cs::NerModel::load(crf_model().model_dir());
  cs::TempDir dir("cellstate-ner-out");
  cs::atomic_write(dir.file("tokens.txt"), "Smith Jones won in Paris .\n");
  std::ostringstream out, err;
  cs::NerPredictOptions o;
  o.input = "tokens";
  o.output = "inline";
  EXPECT_EQ(cs::predict_ner(model, {dir.file("tokens.txt")}, o, out, err), 0);
  EXPECT_EQ(out.str(), "[PER Smith] [PER Jones] won in [LOC Paris] .\n");
  out.str("");
  o.input = "conll";
  o.output = "conll";
  EXPECT_EQ(cs::predict_ner(model, {data_path("ner_tiny.conll"), dir.file("missing.conll")}, o, out, err), 2);
  EXPECT_EQ(out.str().substr(0, 25), "EU\tS-ORG\nrejects\tO\nGerman");
  EXPECT_NE(err.str().find("missing.conll"), std::string::npos);
  // Training data with a tag that is not O or P-TYPE is refused with its line.
  cs::atomic_write(dir.file("bad.conll"), "a O\nb X-PER\n\n");
  cs::NerTrainConfig c;
  c.model.dir = dir.file("m");
  c.train_path = dir.file("bad.conll");
  c.dev_path = dir.file("bad.conll");
  c.runtime.quiet = true;
  EXPECT_NE(exception_of([&] { cs::train_ner(c); }).find("bad.conll:2: expected a tag"), std::string::npos);
  c.train_path = data_path("empty.txt");
  EXPECT_NE(exception_of([&] { cs::train_ner(c); }).find("empty.txt"), std::string::npos);
}
