// nn/concurrent.h: tasks run at once on threads of their own, each with one
// thread and its caller's settings; a bidirectional layer's directions run
// that way without autograd and give what they give one after the other.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cellstate/nn/concurrent.h"
#include "cellstate/nn/gemm.h"
#include "cellstate/nn/rnn.h"
#include "test_util.h"

namespace cellstate {
namespace {

using testing::max_abs_diff;

/// LibTorch's thread count for the guard's lifetime.
class ThreadsGuard {
 public:
  explicit ThreadsGuard(int threads) : previous_(at::get_num_threads()) { at::set_num_threads(threads); }
  ~ThreadsGuard() { at::set_num_threads(previous_); }
  ThreadsGuard(const ThreadsGuard&) = delete;
  ThreadsGuard& operator=(const ThreadsGuard&) = delete;

 private:
  int previous_;
};

struct Seen {
  std::thread::id thread;
  int threads = 0;
  bool grad = true;
  MatmulPrecision precision = MatmulPrecision::kFloat32;
};

std::vector<Seen> run_and_record(int64_t tasks) {
  std::vector<Seen> seen(tasks);
  run_concurrently(tasks, [&](int64_t i) {
    seen[i] = {std::this_thread::get_id(), at::get_num_threads(), torch::GradMode::is_enabled(),
               matmul_precision()};
  });
  return seen;
}

TEST(Concurrent, TasksRunAtOnceWithOneThreadEachAndTheCallersSettings) {
  ThreadsGuard threads(2);
  ASSERT_TRUE(can_run_concurrently(2));
  EXPECT_FALSE(can_run_concurrently(1));
  torch::NoGradGuard no_grad;
  const auto precision = cpu_supports_bf16() ? MatmulPrecision::kBFloat16 : MatmulPrecision::kFloat32;
  MatmulPrecisionGuard products(precision);
  const auto seen = run_and_record(2);
  EXPECT_NE(seen[0].thread, seen[1].thread);
  for (const auto& s : seen) {
    EXPECT_EQ(s.threads, 1);
    EXPECT_FALSE(s.grad);
    EXPECT_EQ(s.precision, precision);
  }
  // Outside the region the caller's thread count is back.
  EXPECT_EQ(at::get_num_threads(), 2);
  // More tasks than threads: each thread takes every other one.
  const auto five = run_and_record(5);
  for (int i = 2; i < 5; ++i) EXPECT_EQ(five[i].thread, five[i - 2].thread) << i;
}

TEST(Concurrent, OneThreadRunsTheTasksInOrderOnTheCaller) {
  ThreadsGuard threads(1);
  EXPECT_FALSE(can_run_concurrently(2));
  std::vector<int64_t> order;
  run_concurrently(3, [&](int64_t i) { order.push_back(i); });
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2}));
  const auto seen = run_and_record(2);
  EXPECT_EQ(seen[0].thread, std::this_thread::get_id());
  EXPECT_EQ(seen[1].thread, std::this_thread::get_id());
}

TEST(Concurrent, ATasksExceptionReachesTheCallerAfterTheOthersFinish) {
  ThreadsGuard threads(2);
  std::mutex m;
  std::vector<int64_t> finished;
  try {
    run_concurrently(2, [&](int64_t i) {
      if (i == 1) throw std::runtime_error("task 1 failed");
      std::lock_guard<std::mutex> lock(m);
      finished.push_back(i);
    });
    FAIL() << "expected the task's exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "task 1 failed");
  }
  EXPECT_EQ(finished, std::vector<int64_t>{0});
}

/// A bidirectional layer large enough to run its directions at once
/// (about 30 MFLOP a direction) gives the same outputs and states on two
/// threads as on one, under each product precision, and agrees with
/// LibTorch's module in float32.
TEST(Concurrent, BidirectionalLayersGiveWhatTheyGiveOnOneThread) {
  for (auto kind : {RecurrentKind::kLSTM, RecurrentKind::kGRU, RecurrentKind::kRNN}) {
    SCOPED_TRACE(to_string(kind));
    torch::manual_seed(11);
    const int64_t T = 24, B = 16, I = 96, H = 96;
    const auto opts = RecurrentOptions(I, H).kind(kind).num_layers(2).bidirectional(true);
    auto custom = make_recurrent(RecurrentOptions(opts).impl(Implementation::kCustom));
    auto builtin = make_recurrent(RecurrentOptions(opts).impl(Implementation::kBuiltin));
    testing::copy_parameters(*custom, *builtin);
    const auto x = torch::randn({T, B, I});
    const auto lengths = torch::randint(T / 2, T + 1, {B}, torch::kLong);
    torch::NoGradGuard no_grad;
    auto run = [&](int threads, MatmulPrecision precision) {
      ThreadsGuard guard(threads);
      MatmulPrecisionGuard products(precision);
      return custom->forward(x, lengths);
    };
    const auto one = run(1, MatmulPrecision::kFloat32), two = run(2, MatmulPrecision::kFloat32);
    EXPECT_LT(max_abs_diff(two.output, one.output), 1e-5);
    EXPECT_LT(max_abs_diff(two.state.h, one.state.h), 1e-5);
    if (kind == RecurrentKind::kLSTM) EXPECT_LT(max_abs_diff(two.state.c, one.state.c), 1e-5);
    EXPECT_LT(max_abs_diff(two.output, builtin->forward(x, lengths).output), 1e-4);
    if (!cpu_supports_bf16()) continue;
    // bf16 in both directions: each half of the output moves off float32's
    // by bfloat16's rounding, and the same way on two threads as on one.
    const auto one16 = run(1, MatmulPrecision::kBFloat16), two16 = run(2, MatmulPrecision::kBFloat16);
    EXPECT_LT(max_abs_diff(two16.output, one16.output), 1e-5);
    for (int64_t half : {0, 1}) {
      const auto y16 = two16.output.narrow(2, half * H, H), y32 = two.output.narrow(2, half * H, H);
      EXPECT_GT(max_abs_diff(y16, y32), 1e-4) << "direction " << half << " ran in float32";
      EXPECT_LT(max_abs_diff(y16, y32), 0.1) << "direction " << half;
    }
  }
}

}  // namespace
}  // namespace cellstate
