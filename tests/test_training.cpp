// Model directory, shared options and the training loop (model_dir.cpp,
// options.cpp, cli.cpp, trainer.cpp).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "cellstate/batching.h"
#include "cellstate/cli.h"
#include "cellstate/io.h"
#include "cellstate/model_dir.h"
#include "cellstate/options.h"
#include "cellstate/rnn.h"
#include "cellstate/trainer.h"
#include "test_util.h"

namespace cs = cellstate;
namespace po = boost::program_options;
using cellstate::testing::exception_of;

namespace {

// A tiny sequence classifier: embedding -> LSTM (library) -> dropout -> linear.
struct TinyImpl : torch::nn::Module {
  TinyImpl(cs::Implementation impl, uint64_t seed) {
    torch::manual_seed(seed);
    embed = register_module("embed", torch::nn::Embedding(10, 8));
    rnn = register_module("rnn", cs::make_recurrent(cs::RecurrentOptions(8, 12).batch_first(true).impl(impl)));
    out = register_module("out", torch::nn::Linear(12, 2));
    drop = register_module("drop", torch::nn::Dropout(0.3));
  }
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& lengths) {
    auto r = rnn->forward(embed(ids), lengths);
    return out(drop(r.state.h[-1]));
  }
  torch::nn::Embedding embed{nullptr};
  std::shared_ptr<cs::RecurrentModuleImpl> rnn;
  torch::nn::Linear out{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(Tiny);

// Label: whether token 7 occurs in the sequence.
class TinyTask : public cs::TrainTask {
 public:
  TinyTask(std::string dir, uint64_t init_seed, int64_t interrupt_at = -1)
      : dir_(std::move(dir)), model_(cs::Implementation::kCustom, init_seed), interrupt_at_(interrupt_at) {
    cs::DataRng rng(3);
    for (int i = 0; i < 96; ++i) {
      std::vector<int64_t> s(2 + rng.below(8));
      for (auto& t : s) t = 1 + static_cast<int64_t>(rng.below(9));
      labels_.push_back(std::find(s.begin(), s.end(), 7) != s.end());
      lengths_.push_back(static_cast<int64_t>(s.size()));
      data_.push_back(std::move(s));
    }
  }
  torch::nn::Module& module() override { return *model_; }
  int64_t begin_epoch(int64_t epoch) override {
    cs::BucketOptions o;
    o.batch_size = 16;
    o.chunk_batches = 2;
    batches_ = cs::bucket_batches(lengths_, o, 11, epoch);
    return static_cast<int64_t>(batches_.size());
  }
  cs::StepResult train_step(int64_t index) override {
    if (++steps_ == interrupt_at_) std::raise(SIGINT);
    auto [ids, y] = batch(batches_[static_cast<size_t>(index)]);
    auto loss = torch::nn::functional::cross_entropy(model_->forward(ids.ids, ids.lengths), y);
    loss.backward();
    return {loss.item<double>(), ids.ids.size(0)};
  }
  cs::Evaluation evaluate() override {
    std::vector<int64_t> all(data_.size());
    std::iota(all.begin(), all.end(), 0);
    auto [ids, y] = batch(all);
    const double acc =
        model_->forward(ids.ids, ids.lengths).argmax(1).eq(y).to(torch::kDouble).mean().item<double>();
    return {acc, {{"accuracy", acc}}};
  }
  void save_best() override { cs::save_weights(*model_, dir_ + "/weights.pt"); }
  Tiny& model() { return model_; }

 private:
  std::pair<cs::PaddedBatch, torch::Tensor> batch(const std::vector<int64_t>& idx) {
    std::vector<std::vector<int64_t>> seqs;
    std::vector<int64_t> y;
    for (auto i : idx) {
      seqs.push_back(data_[static_cast<size_t>(i)]);
      y.push_back(labels_[static_cast<size_t>(i)]);
    }
    return {cs::pad_batch(seqs), torch::tensor(y, torch::kInt64)};
  }
  std::string dir_;
  Tiny model_;
  int64_t interrupt_at_;
  int64_t steps_ = 0;
  std::vector<std::vector<int64_t>> data_;
  std::vector<int64_t> labels_, lengths_;
  std::vector<std::vector<int64_t>> batches_;
};

cs::TrainerOptions trainer_options(const std::string& dir) {
  cs::TrainerOptions o;
  o.model_dir = dir;
  o.quiet = true;
  o.metric = "accuracy";
  o.training.epochs = 4;
  o.training.lr = 0.02;
  o.training.patience = 0;
  o.training.clip = 1.0;
  o.training.lr_schedule = "step";
  o.training.lr_decay = 0.7;
  o.training.seed = 5;
  return o;
}

int count_lines(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) n += !line.empty();
  return n;
}

}  // namespace

TEST(ModelDir, ConfigRoundTripAndChecks) {
  cs::TempDir dir;
  auto config = cs::new_model_config("sentiment");
  config["hidden"] = 64;
  cs::write_model_config(dir.file("m"), config);
  const auto back = cs::read_model_config(dir.file("m"), "sentiment");
  EXPECT_EQ(back["hidden"], 64);
  EXPECT_EQ(back["format_version"], cs::kModelFormatVersion);
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("m"), "ner"); })
                .find("config.json: a 'sentiment' model, expected a 'ner' model"),
            std::string::npos);
  config["format_version"] = 99;
  cs::write_model_config(dir.file("m"), config);
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("m"), "sentiment"); })
                .find("model format version 99, this cellstate reads version 1"),
            std::string::npos);
  cs::atomic_write(dir.file("m/config.json"), "{ not json");
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("m"), "sentiment"); }).find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("nothing"), "sentiment"); })
                .find("no such model directory"),
            std::string::npos);
  std::filesystem::create_directories(dir.file("empty"));
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("empty"), "sentiment"); })
                .find("empty/config.json: missing file"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::config_get<int>(back, "layers", "c.json"); })
                .find("c.json: config: missing key \"layers\""),
            std::string::npos);
}

TEST(ModelDir, WeightsRoundTripHalfAndMismatch) {
  cs::TempDir dir;
  Tiny a(cs::Implementation::kCustom, 1), b(cs::Implementation::kCustom, 2);
  cs::save_weights(*a, dir.file("w.pt"));
  cs::load_weights(*b, dir.file("w.pt"));
  for (const auto& p : a->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), b->named_parameters()[p.key()]));
  cs::save_weights(*a, dir.file("h.pt"), /*half=*/true);
  EXPECT_LT(std::filesystem::file_size(dir.file("h.pt")), std::filesystem::file_size(dir.file("w.pt")));
  Tiny c(cs::Implementation::kCustom, 3);
  cs::load_weights(*c, dir.file("h.pt"));
  EXPECT_EQ(c->out->weight.dtype(), torch::kFloat32);
  EXPECT_LT((c->out->weight - a->out->weight).abs().max().item<double>(), 1e-3);

  // A model of another size: the error names the tensor and both shapes.
  auto other = cs::make_recurrent(cs::RecurrentOptions(8, 16));
  torch::nn::Module holder;
  holder.register_module("rnn", other);
  cs::save_weights(holder, dir.file("o.pt"));
  auto small = cs::make_recurrent(cs::RecurrentOptions(8, 12));
  torch::nn::Module holder2;
  holder2.register_module("rnn", small);
  EXPECT_NE(exception_of([&] { cs::load_weights(holder2, dir.file("o.pt")); })
                .find("tensor 'rnn.weight_ih_l0' has shape [64, 8], the config expects [48, 8]"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::load_weights(*a, dir.file("o.pt")); }).find("no tensor 'embed.weight'"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::load_weights(*a, dir.file("missing.pt")); }).find("missing weights file"),
            std::string::npos);
  cs::atomic_write(dir.file("junk.pt"), "junk");
  EXPECT_NE(exception_of([&] { cs::load_weights(*a, dir.file("junk.pt")); }).find("not a readable weights file"),
            std::string::npos);
}

TEST(ModelDir, CustomWeightsLoadIntoBuiltinWithSamePredictions) {
  cs::TempDir dir;
  Tiny custom(cs::Implementation::kCustom, 4), builtin(cs::Implementation::kBuiltin, 5);
  cs::save_weights(*custom, dir.file("w.pt"));
  cs::load_weights(*builtin, dir.file("w.pt"));
  custom->eval();
  builtin->eval();
  torch::NoGradGuard g;
  auto batch = cs::pad_batch({{1, 2, 3, 4}, {5, 6}, {7, 8, 9}});
  auto x = custom->forward(batch.ids, batch.lengths), y = builtin->forward(batch.ids, batch.lengths);
  EXPECT_LT((x - y).abs().max().item<double>(), 1e-5);
}

TEST(Options, ConfigFileAndCommandLineWins) {
  cs::ModelOptions model;
  cs::TrainingOptions training;
  cs::RuntimeOptions runtime;
  std::string config;
  po::options_description desc("test");
  desc.add_options()("help", "help")("config", po::value(&config), "json");
  model.add_to(desc);
  training.add_to(desc);
  runtime.add_to(desc);
  cs::TempDir dir;
  std::ofstream(dir.file("c.json")) << R"({"hidden": 99, "lr": 0.5, "bidirectional": true,
                                          "quiet": true, "model": "from-config"})";
  const std::string cfg = "--config=" + dir.file("c.json");
  const char* argv[] = {"prog", cfg.c_str(), "--lr", "0.25", "--layers", "3"};
  auto status = cs::parse_command_line(6, const_cast<char**>(argv), desc, "prog",
                                       [&] { model.validate(); training.validate(); });
  EXPECT_FALSE(status.has_value());
  EXPECT_EQ(model.hidden, 99);
  EXPECT_EQ(model.layers, 3);
  EXPECT_TRUE(model.bidirectional);
  EXPECT_EQ(model.dir, "from-config");
  EXPECT_DOUBLE_EQ(training.lr, 0.25);  // the command line wins
  EXPECT_TRUE(runtime.quiet);
  EXPECT_NE(exception_of([&] { cs::config_to_arguments(R"({"hiden": 3})", "c.json", desc); })
                .find("c.json: unknown option \"hiden\""),
            std::string::npos);
  training.optimizer = "adagrad";
  EXPECT_THROW(training.validate(), std::invalid_argument);
  model.dropout = 1.5;
  EXPECT_THROW(model.validate(), std::invalid_argument);
}

TEST(Options, BadUsageExitsTwo) {
  cs::TrainingOptions training;
  po::options_description desc("test");
  desc.add_options()("help", "help");
  training.add_to(desc);
  const char* argv[] = {"prog", "--epochs", "zero"};
  EXPECT_EQ(cs::parse_command_line(3, const_cast<char**>(argv), desc, "prog"), std::optional<int>(2));
  const char* argv2[] = {"prog", "--epochs", "0"};
  EXPECT_EQ(cs::parse_command_line(3, const_cast<char**>(argv2), desc, "prog", [&] { training.validate(); }),
            std::optional<int>(2));
  EXPECT_EQ(cs::run_guarded("p", [] () -> int { throw cs::InputError("f", 3, "bad"); }), 2);
  EXPECT_EQ(cs::run_guarded("p", [] () -> int { throw std::runtime_error("boom"); }), 1);
}

TEST(LrSchedule, StepPlateauAndWarmup) {
  cs::TrainingOptions o;
  o.lr = 1.0;
  o.lr_schedule = "step";
  o.lr_decay = 0.5;
  o.lr_step = 2;
  cs::LrSchedule step(o, 100);
  step.after_epoch(1);
  EXPECT_DOUBLE_EQ(step.lr(), 1.0);
  step.after_epoch(2);
  EXPECT_DOUBLE_EQ(step.lr(), 0.5);
  o.lr_schedule = "plateau";
  o.lr_step = 1;
  o.min_lr = 0.3;
  cs::LrSchedule plateau(o, 100);
  plateau.after_evaluation(true);
  EXPECT_DOUBLE_EQ(plateau.lr(), 1.0);
  plateau.after_evaluation(false);
  EXPECT_DOUBLE_EQ(plateau.lr(), 0.5);
  plateau.after_evaluation(false);
  EXPECT_DOUBLE_EQ(plateau.lr(), 0.3);  // floored at min_lr
  o.lr_schedule = "warmup-linear";
  o.warmup = 4;
  cs::LrSchedule warm(o, 12);
  EXPECT_DOUBLE_EQ(warm.lr(), 0.25);  // step 1 of 4
  warm.after_step(3);
  EXPECT_DOUBLE_EQ(warm.lr(), 1.0);   // step 4: peak
  warm.after_step(4);
  EXPECT_DOUBLE_EQ(warm.lr(), 1.0);   // step 5: (12 - 5 + 1) / 8
  warm.after_step(11);
  EXPECT_DOUBLE_EQ(warm.lr(), 1.0 / 8);  // step 12, the last
}

TEST(Trainer, LearnsAndKeepsTheBestModel) {
  cs::TempDir dir;
  TinyTask task(dir.path(), 1);
  auto o = trainer_options(dir.path());
  o.training.epochs = 12;
  const auto r = cs::Trainer(o).fit(task);
  EXPECT_EQ(r.stop_reason, "epochs");
  EXPECT_GT(r.best_score, 0.9);
  EXPECT_EQ(count_lines(dir.file("train_log.jsonl")), 12);
  const auto first = nlohmann::json::parse(cs::read_file(dir.file("train_log.jsonl")).substr(0, cs::read_file(dir.file("train_log.jsonl")).find('\n')));
  EXPECT_TRUE(first.contains("dev"));
  EXPECT_TRUE(first.contains("train_loss"));
  EXPECT_TRUE(first.contains("tok_per_s"));
  // weights.pt holds the best evaluation's model.
  TinyTask check(dir.path(), 9);
  cs::load_weights(check.module(), dir.file("weights.pt"));
  check.module().eval();
  torch::NoGradGuard g;
  EXPECT_DOUBLE_EQ(check.evaluate().score, r.best_score);
}

TEST(Trainer, InterruptedThenResumedEqualsUninterrupted) {
  cs::TempDir a, b;
  TinyTask straight(a.path(), 1);
  torch::manual_seed(42);
  const auto ra = cs::Trainer(trainer_options(a.path())).fit(straight);
  ASSERT_EQ(ra.stop_reason, "epochs");

  // Same run, SIGINT during step 9 (of 24): a checkpoint, a clean return.
  TinyTask first(b.path(), 1, 9);
  torch::manual_seed(42);
  const auto rb1 = cs::Trainer(trainer_options(b.path())).fit(first);
  EXPECT_EQ(rb1.stop_reason, "interrupted");
  EXPECT_EQ(rb1.steps, 9);
  ASSERT_TRUE(cs::file_exists(b.file("checkpoint.pt")));
  EXPECT_EQ(std::signal(SIGINT, SIG_DFL), SIG_DFL) << "the SIGINT handler was not restored";

  // A new process would build the task afresh (other initial weights, other
  // RNG state); --resume restores everything.
  TinyTask second(b.path(), 77);
  torch::manual_seed(1234);
  auto o = trainer_options(b.path());
  o.training.resume = true;
  const auto rb2 = cs::Trainer(o).fit(second);
  EXPECT_EQ(rb2.stop_reason, "epochs");
  EXPECT_EQ(rb2.steps, ra.steps);
  for (const auto& p : straight.module().named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), second.module().named_parameters()[p.key()])) << p.key();
  EXPECT_EQ(count_lines(b.file("train_log.jsonl")), count_lines(a.file("train_log.jsonl")));
  EXPECT_DOUBLE_EQ(rb2.best_score, ra.best_score);
}

TEST(Trainer, EarlyStoppingAndResumeErrors) {
  // A task whose dev score only gets worse: stops after `patience` evaluations.
  class Worsening : public TinyTask {
   public:
    using TinyTask::TinyTask;
    cs::Evaluation evaluate() override { return {score_ -= 0.1, {}}; }
    double score_ = 1.0;
  };
  cs::TempDir dir;
  Worsening task(dir.path(), 1);
  auto o = trainer_options(dir.path());
  o.training.epochs = 10;
  o.training.patience = 2;
  const auto r = cs::Trainer(o).fit(task);
  EXPECT_EQ(r.stop_reason, "early-stopping");
  EXPECT_EQ(r.best_epoch, 1);
  EXPECT_EQ(count_lines(dir.file("train_log.jsonl")), 3);

  cs::TempDir empty;
  TinyTask t2(empty.path(), 1);
  auto resume = trainer_options(empty.path());
  resume.training.resume = true;
  EXPECT_NE(exception_of([&] { cs::Trainer(resume).fit(t2); }).find("checkpoint.pt: no checkpoint to resume from"),
            std::string::npos);
}
