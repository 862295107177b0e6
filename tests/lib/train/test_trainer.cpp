// The training loop, its schedule and checkpoints (train/).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "cellstate/data/batching.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/train/schedule.h"
#include "cellstate/train/trainer.h"
#include "cellstate/util/io.h"
#include "cellstate/util/random.h"
#include "test_util.h"
#include "tiny_model.h"

namespace cs = cellstate;
using cellstate::testing::exception_of;
using cellstate::testing::Tiny;

namespace {

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
    return {loss.item<double>(), ids.ids.size(0), loss};
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
  o.training.lr_schedule = cs::LrScheduleKind::kStep;
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

TEST(LrSchedule, StepPlateauAndWarmup) {
  cs::TrainingOptions o;
  o.lr = 1.0;
  o.lr_schedule = cs::LrScheduleKind::kStep;
  o.lr_decay = 0.5;
  o.lr_step = 2;
  cs::LrSchedule step(o, 100);
  step.after_epoch(1);
  EXPECT_DOUBLE_EQ(step.lr(), 1.0);
  step.after_epoch(2);
  EXPECT_DOUBLE_EQ(step.lr(), 0.5);
  o.lr_schedule = cs::LrScheduleKind::kPlateau;
  o.lr_step = 1;
  o.min_lr = 0.3;
  cs::LrSchedule plateau(o, 100);
  plateau.after_evaluation(true);
  EXPECT_DOUBLE_EQ(plateau.lr(), 1.0);
  plateau.after_evaluation(false);
  EXPECT_DOUBLE_EQ(plateau.lr(), 0.5);
  plateau.after_evaluation(false);
  EXPECT_DOUBLE_EQ(plateau.lr(), 0.3);  // floored at min_lr
  o.lr_schedule = cs::LrScheduleKind::kWarmupLinear;
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
  EXPECT_EQ(cs::to_string(r.stop_reason), "epochs");
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
  ASSERT_EQ(cs::to_string(ra.stop_reason), "epochs");

  // Same run, SIGINT during step 9 (of 24): a checkpoint, a clean return.
  TinyTask first(b.path(), 1, 9);
  torch::manual_seed(42);
  const auto rb1 = cs::Trainer(trainer_options(b.path())).fit(first);
  EXPECT_EQ(cs::to_string(rb1.stop_reason), "interrupted");
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
  EXPECT_EQ(cs::to_string(rb2.stop_reason), "epochs");
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
  EXPECT_EQ(cs::to_string(r.stop_reason), "early-stopping");
  EXPECT_EQ(r.best_epoch, 1);
  EXPECT_EQ(count_lines(dir.file("train_log.jsonl")), 3);

  cs::TempDir empty;
  TinyTask t2(empty.path(), 1);
  auto resume = trainer_options(empty.path());
  resume.training.resume = true;
  EXPECT_NE(exception_of([&] { cs::Trainer(resume).fit(t2); }).find("checkpoint.pt: no checkpoint to resume from"),
            std::string::npos);
}

namespace {

// Dev scores from a script (higher is better); records the weights each
// training step starts from and the weights each evaluation sees. Its place
// in the script is task state, so a resumed run continues it.
class ScriptedTask : public TinyTask {
 public:
  ScriptedTask(std::string dir, uint64_t init_seed, std::vector<double> scores, int64_t interrupt_at = -1)
      : TinyTask(std::move(dir), init_seed, interrupt_at), scores_(std::move(scores)) {}
  cs::StepResult train_step(int64_t index) override {
    step_weights.push_back(flat_weights());
    return TinyTask::train_step(index);
  }
  cs::Evaluation evaluate() override {
    evaluated_weights.push_back(flat_weights());
    const double s = scores_.at(static_cast<size_t>(evaluations_++));
    return {s, {{"score", s}}};
  }
  void save_state(torch::serialize::OutputArchive& a) override { a.write("evaluations", torch::tensor(evaluations_)); }
  void load_state(torch::serialize::InputArchive& a) override {
    torch::Tensor t;
    a.read("evaluations", t);
    evaluations_ = t.item<int64_t>();
  }
  torch::Tensor flat_weights() {
    std::vector<torch::Tensor> all;
    for (const auto& p : module().parameters()) all.push_back(p.detach().reshape(-1).clone());
    return torch::cat(all);
  }
  std::vector<torch::Tensor> step_weights, evaluated_weights;

 private:
  std::vector<double> scores_;
  int64_t evaluations_ = 0;
};

}  // namespace

// NT-ASGD with N = 2: the 5th evaluation (0.6) is worse than 0.7, the best
// before the last two, so from step 30 (5 epochs of 6 batches) the weights
// are averaged; evaluations 6..8 see the mean of the weights after steps
// 30 .. their step, and the best of them is what weights.pt keeps.
TEST(Trainer, NtAsgdAveragesTheWeightsOnceDevStopsImproving) {
  const std::vector<double> script{0.5, 0.7, 0.6, 0.6, 0.6, 0.65, 0.8, 0.75};
  cs::TempDir dir;
  ScriptedTask task(dir.path(), 1, script);
  auto o = trainer_options(dir.path());
  o.training.epochs = 8;
  o.training.nt_asgd = 2;
  torch::manual_seed(42);
  const auto r = cs::Trainer(o).fit(task);
  ASSERT_EQ(task.step_weights.size(), 48u);
  ASSERT_EQ(task.evaluated_weights.size(), 8u);
  const auto final_weights = task.flat_weights();  // the raw weights after step 48
  auto weights_after = [&](int64_t step) {  // step_weights[s] holds the weights after step s
    return step == 48 ? final_weights : task.step_weights[static_cast<size_t>(step)];
  };
  for (int e = 0; e < 5; ++e)  // not averaged yet: the weights after the epoch's last step
    EXPECT_TRUE(torch::equal(task.evaluated_weights[static_cast<size_t>(e)], weights_after(6 * (e + 1)))) << e;
  for (int e = 5; e < 8; ++e) {
    const int64_t last = 6 * (e + 1);
    auto mean = torch::zeros_like(final_weights);
    for (int64_t s = 30; s <= last; ++s) mean += weights_after(s);
    mean /= static_cast<double>(last - 30 + 1);
    EXPECT_LT((task.evaluated_weights[static_cast<size_t>(e)] - mean).abs().max().item<double>(), 1e-6)
        << "evaluation " << e + 1;
  }
  EXPECT_FALSE(torch::equal(task.evaluated_weights[7], final_weights));
  EXPECT_DOUBLE_EQ(r.best_score, 0.8);
  EXPECT_EQ(r.best_step, 42);
  // weights.pt: the average that scored 0.8.
  TinyTask saved(dir.path(), 9);
  cs::load_weights(saved.module(), dir.file("weights.pt"));
  std::vector<torch::Tensor> all;
  for (const auto& p : saved.module().parameters()) all.push_back(p.detach().reshape(-1));
  EXPECT_TRUE(torch::equal(torch::cat(all), task.evaluated_weights[6]));
  const auto log = cs::read_file(dir.file("train_log.jsonl"));
  EXPECT_EQ(nlohmann::json::parse(log.substr(0, log.find('\n'))).count("averaged_steps"), 0u);
  EXPECT_NE(log.find("\"averaged_steps\":13"), std::string::npos) << log;  // evaluation 7: steps 30..42

  // Interrupted while averaging (step 40) and resumed: the same run.
  cs::TempDir b;
  ScriptedTask first(b.path(), 1, script, 40);
  auto interrupted = o;
  interrupted.model_dir = b.path();
  torch::manual_seed(42);
  EXPECT_EQ(cs::to_string(cs::Trainer(interrupted).fit(first).stop_reason), "interrupted");
  ScriptedTask second(b.path(), 77, script);
  torch::manual_seed(1234);
  auto resume = o;
  resume.model_dir = b.path();
  resume.training.resume = true;
  const auto rb = cs::Trainer(resume).fit(second);
  EXPECT_DOUBLE_EQ(rb.best_score, 0.8);
  EXPECT_TRUE(torch::equal(second.flat_weights(), final_weights));
  EXPECT_TRUE(torch::equal(second.evaluated_weights.back(), task.evaluated_weights.back()));
  TinyTask resumed_saved(b.path(), 9);
  cs::load_weights(resumed_saved.module(), b.file("weights.pt"));
  all.clear();
  for (const auto& p : resumed_saved.module().parameters()) all.push_back(p.detach().reshape(-1));
  EXPECT_TRUE(torch::equal(torch::cat(all), task.evaluated_weights[6]));
}
