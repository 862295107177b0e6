// cellstate-ner's library side (tasks/ner.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "cellstate/util/io.h"
#include "cellstate/tasks/ner.h"
#include "cellstate/data/word_split.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::copy_parameters;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;
using cellstate::testing::max_abs_diff;

namespace {

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

TEST(Ner, BatchesTaggedAtOnceMatchBatchesTaggedInTurn) {
  // tag() runs its batches on the threads at once (one thread each) and
  // encodes each distinct token once: every batch size and thread count
  // gives the same tags and confidences as single sentences on one thread.
  auto model = cs::NerModel::load(crf_model().model_dir());
  std::vector<std::vector<std::string>> sentences;
  for (const auto& s : cs::read_conll(data_path("ner_tiny.conll"))) sentences.push_back(s.tokens);
  sentences.push_back({"Smith", "Jones", "won", "in", "Paris", "."});
  sentences.push_back({"Smith"});
  ASSERT_GE(sentences.size(), 6u);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  std::vector<cs::TaggedSentence> expected;
  for (const auto& s : sentences) expected.push_back(model.tag({s}, true, 1)[0]);
  {
    // ...and as the tagger decodes encode()'s input (no cache) itself.
    torch::NoGradGuard no_grad;
    for (size_t k = 0; k < sentences.size(); ++k) {
      const auto encoded = model.encode(sentences[k]);
      const auto batch = cs::make_tagger_batch({&encoded});
      const auto decoded = model.tagger()->decode(batch, model.tagger()->emissions(batch));
      std::vector<std::string> tags;
      for (const auto id : decoded.at(0)) tags.push_back(model.tags().at(static_cast<size_t>(id)));
      EXPECT_EQ(tags, expected[k].tags) << "sentence " << k;
    }
  }
  for (const int t : {1, 2, 3}) {
    at::set_num_threads(t);
    for (const int64_t batch : {1, 2, 5}) {
      int64_t reported = 0;
      const auto got = model.tag(sentences, true, batch, [&](int64_t n) { reported += n; });
      EXPECT_EQ(reported, static_cast<int64_t>(sentences.size()));
      ASSERT_EQ(got.size(), expected.size());
      for (size_t k = 0; k < got.size(); ++k) {
        SCOPED_TRACE("threads " + std::to_string(t) + ", batch " + std::to_string(batch) + ", sentence " +
                     std::to_string(k));
        EXPECT_EQ(got[k].tags, expected[k].tags);
        ASSERT_EQ(got[k].entities.size(), expected[k].entities.size());
        for (size_t e = 0; e < got[k].entities.size(); ++e)
          EXPECT_NEAR(got[k].entities[e].confidence, expected[k].entities[e].confidence, 1e-5);
      }
    }
  }
  at::set_num_threads(threads);
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
  o.input_format = "tokens";
  o.format = "inline";
  EXPECT_EQ(cs::predict_ner(model, {dir.file("tokens.txt")}, o, out, err), 0);
  EXPECT_EQ(out.str(), "[PER Smith] [PER Jones] won in [LOC Paris] .\n");
  out.str("");
  o.input_format = "conll";
  o.format = "conll";
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
