// cellstate-sentiment's library side (tasks/sentiment.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>

#include "cellstate/util/io.h"
#include "cellstate/tasks/sentiment.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;

namespace {

// One tiny model, trained once for the whole suite on tests/data.
struct Trained {
  cs::TempDir dir{"cellstate-sentiment-test"};
  cs::TrainResult result;
  Trained() {
    cs::SentimentTrainConfig c;
    c.model.dir = dir.file("model");
    c.model.embed = 16;
    c.model.hidden = 16;
    c.model.bidirectional = true;
    c.model.dropout = 0.1;
    c.embed_dropout = 0.0;
    c.vocab_size = 60;
    c.pooling = "max";
    c.train_path = data_path("sentiment_tiny.tsv");
    c.dev_path = data_path("sentiment_tiny.tsv");
    c.training.epochs = 40;
    c.ensemble = 2;
    c.training.patience = 0;
    c.training.lr = 0.01;
    c.training.batch_size = 4;
    c.runtime.quiet = true;
    result = cs::train_sentiment(c);
  }
};

const Trained& trained() {
  static const Trained t;
  return t;
}

}  // namespace

TEST(Sentiment, TinyTrainingReachesAllOfIt) {
  const auto& t = trained();
  EXPECT_DOUBLE_EQ(t.result.best_score, 1.0);
  auto model = cs::SentimentModel::load(t.dir.file("model"));
  const auto report = cs::evaluate_sentiment(model, data_path("sentiment_tiny.tsv"));
  EXPECT_DOUBLE_EQ(report.accuracy, 1.0);
  EXPECT_EQ(model.labels().names(), (std::vector<std::string>{"neg", "pos"}));
  EXPECT_EQ(model.members().size(), 2u);
  for (const char* f : {"config.json", "tokenizer.model", "weights.pt", "weights.1.pt", "train_log.jsonl", "checkpoint.pt"})
    EXPECT_TRUE(cs::file_exists(t.dir.file(std::string("model/") + f))) << f;
}

TEST(Sentiment, SameProbabilitiesAloneAndInAPaddedBatch) {
  auto model = cs::SentimentModel::load(trained().dir.file("model"));
  const std::string text = "a wonderful film";
  const auto alone = model.probabilities({text});
  const auto batch = model.probabilities({"an awful , boring and terrible film from start to finish", text, "dull"});
  EXPECT_LT((alone[0] - batch[1]).abs().max().item<double>(), 1e-6);
}

TEST(Sentiment, BuiltinGivesTheSameProbabilitiesAsCustom) {
  auto custom = cs::SentimentModel::load(trained().dir.file("model"), cs::Implementation::kCustom);
  auto builtin = cs::SentimentModel::load(trained().dir.file("model"), cs::Implementation::kBuiltin);
  const std::vector<std::string> texts = {"a wonderful film", "terrible , boring", "great fun but a dull end"};
  EXPECT_LT((custom.probabilities(texts) - builtin.probabilities(texts)).abs().max().item<double>(), 1e-5);
}

TEST(Sentiment, PredictLinesMarksEmptyLinesAndStaysAligned) {
  auto model = cs::SentimentModel::load(trained().dir.file("model"));
  std::ostringstream out, err;
  cs::PredictOptions o;
  EXPECT_EQ(cs::predict_sentiment(model, {data_path("predict_lines.txt")}, o, out, err), 0);
  std::istringstream lines(out.str());
  std::vector<std::string> rows;
  for (std::string l; std::getline(lines, l);) rows.push_back(l);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_NE(rows[0].find("\t1\tpos\t"), std::string::npos) << rows[0];
  EXPECT_NE(rows[1].find("\t2\t<empty>\t-"), std::string::npos) << rows[1];
  EXPECT_NE(rows[2].find("\t3\tneg\t"), std::string::npos) << rows[2];
  o.format = "jsonl";
  o.top_k = 2;
  std::ostringstream js;
  cs::predict_sentiment(model, {data_path("predict_lines.txt")}, o, js, err);
  const auto first = nlohmann::json::parse(js.str().substr(0, js.str().find('\n')));
  EXPECT_EQ(first["label"], "pos");
  EXPECT_NEAR(first["probabilities"]["pos"].get<double>() + first["probabilities"]["neg"].get<double>(), 1.0, 1e-5);
  o.format = "tsv";
  o.threshold = 1.0;  // nothing is that sure: every label becomes '?'
  std::ostringstream sure;
  cs::predict_sentiment(model, {data_path("predict_lines.txt")}, o, sure, err);
  EXPECT_NE(sure.str().find("\t1\t?\t"), std::string::npos) << sure.str();
}

TEST(Sentiment, PredictFilesGivesDocumentAndSentences) {
  auto model = cs::SentimentModel::load(trained().dir.file("model"));
  std::ostringstream out, err;
  cs::PredictOptions o;
  o.unit = "file";
  o.format = "jsonl";
  EXPECT_EQ(cs::predict_sentiment(model, {data_path("review.txt")}, o, out, err), 0);
  const auto j = nlohmann::json::parse(out.str());
  ASSERT_EQ(j["sentences"].size(), 3u);
  EXPECT_EQ(j["sentences"][0]["text"], "A wonderful film.");
  EXPECT_EQ(j["sentences"][2]["line"], 2);
}

TEST(Sentiment, BadInputsAreReportedAndOthersStillProcessed) {
  auto model = cs::SentimentModel::load(trained().dir.file("model"));
  std::ostringstream out, err;
  cs::PredictOptions o;
  const int status = cs::predict_sentiment(
      model, {data_path("missing.txt"), data_path("invalid_utf8.txt"), data_path("predict_lines.txt")}, o, out, err);
  EXPECT_EQ(status, 2);
  EXPECT_NE(err.str().find("missing.txt: cannot open"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("invalid_utf8.txt:2: invalid UTF-8"), std::string::npos) << err.str();
  EXPECT_NE(out.str().find("invalid_utf8.txt\t1\t"), std::string::npos) << "lines before the bad one still answered";
  EXPECT_NE(out.str().find("predict_lines.txt\t3\t"), std::string::npos);
  o.unit = "file";
  std::ostringstream out2, err2;
  EXPECT_EQ(cs::predict_sentiment(model, {data_path("empty.txt")}, o, out2, err2), 2);
  EXPECT_NE(err2.str().find("empty.txt: no text (empty file)"), std::string::npos) << err2.str();
  EXPECT_NE(exception_of([&] { cs::evaluate_sentiment(model, data_path("classify_bad.tsv")); })
                .find("classify_bad.tsv:2: expected LABEL<TAB>TEXT"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::evaluate_sentiment(model, data_path("sentiment_unknown_label.tsv")); })
                .find("sentiment_unknown_label.tsv:2: unknown label 'neutral', expected one of: neg, pos"),
            std::string::npos);
}

TEST(Sentiment, IncompleteOrMismatchedModelDirectories) {
  cs::TempDir dir;
  const auto src = trained().dir.file("model");
  for (const char* missing : {"weights.pt", "tokenizer.model", "config.json"}) {
    const std::filesystem::path target = dir.file(std::string("no-") + missing);
    std::filesystem::create_directories(target);
    for (const auto& f : std::filesystem::directory_iterator(src))
      if (f.path().filename() != missing) std::filesystem::copy_file(f.path(), target / f.path().filename());
    const auto msg = exception_of([&] { cs::SentimentModel::load(target); });
    EXPECT_NE(msg.find(std::string(missing) + ": missing"), std::string::npos) << msg;
  }
  // A config that promises another size than the weights hold.
  const auto target = dir.file("bigger");
  std::filesystem::copy(src, target);
  auto config = nlohmann::json::parse(cs::read_file(target + "/config.json"));
  config["model"]["hidden"] = 32;
  cs::atomic_write(target + "/config.json", config.dump());
  EXPECT_NE(exception_of([&] { cs::SentimentModel::load(target); }).find("config.json: "), std::string::npos);
  EXPECT_NE(exception_of([&] { cs::SentimentModel::load(target, std::nullopt, false); })
                .find("weights.pt: the tensors' shapes or types are not the ones config.json describes"),
            std::string::npos);
}
