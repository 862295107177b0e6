// nn/gemm.h: oneDNN's products equal LibTorch's for every layout the
// kernels use (plain, transposed, row views), with bias and accumulation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cellstate/nn/gemm.h"
#include "cellstate/util/interrupt.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <signal.h>

namespace cs = cellstate;

namespace {

torch::Tensor reference(const torch::Tensor& out0, const torch::Tensor& a, const torch::Tensor& b, double beta,
                        const torch::Tensor& bias) {
  auto r = torch::mm(a.to(torch::kDouble), b.to(torch::kDouble));
  if (bias.defined()) r += bias.to(torch::kDouble);
  if (beta == 1) r += out0.to(torch::kDouble);
  return r;
}

}  // namespace

TEST(Gemm, EqualsLibTorchForEveryLayout) {
  torch::manual_seed(3);
  struct Shape {
    int64_t m, k, n;
  };
  for (const auto sh : {Shape{1, 7, 5}, Shape{32, 65, 260}, Shape{113, 40, 3}, Shape{3, 300, 1}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (double beta : {0.0, 1.0}) {
          for (bool with_bias : {false, true}) {
            const auto a = ta ? torch::randn({sh.k, sh.m}).t() : torch::randn({sh.m, sh.k});
            const auto b = tb ? torch::randn({sh.n, sh.k}).t() : torch::randn({sh.k, sh.n});
            const auto bias = with_bias ? torch::randn({sh.n}) : torch::Tensor();
            // out is a row block of a wider buffer, as the kernels' per-step gates are.
            auto wide = torch::randn({sh.m + 2, sh.n + 3});
            auto out = wide.narrow(0, 1, sh.m).narrow(1, 0, sh.n);
            const auto before = out.clone();
            const auto untouched = wide.narrow(1, sh.n, 3).clone();
            cs::gemm_out(out, a, b, beta, bias);
            const auto want = reference(before, a, b, beta, bias);
            EXPECT_LT((out.to(torch::kDouble) - want).abs().max().item<double>(), 1e-3 * std::sqrt(double(sh.k)))
                << sh.m << "x" << sh.k << "x" << sh.n << " ta " << ta << " tb " << tb << " beta " << beta
                << " bias " << with_bias;
            EXPECT_TRUE(torch::equal(wide.narrow(1, sh.n, 3), untouched)) << "wrote outside out";
          }
        }
      }
    }
  }
}

TEST(Gemm, DoubleGoesThroughLibTorchExactly) {
  const auto a = torch::randn({9, 4}, torch::kDouble), b = torch::randn({4, 6}, torch::kDouble);
  const auto bias = torch::randn({6}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(cs::gemm(a, b, bias), torch::addmm(bias, a, b), 1e-12, 1e-12));
}

TEST(Gemm, LinearMatchesFunctionalAndKeepsAutograd) {
  const auto x = torch::randn({2, 3, 8}), w = torch::randn({5, 8}), bias = torch::randn({5});
  const auto want = torch::nn::functional::linear(x, w, bias);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::allclose(cs::linear(x, w, bias), want, 1e-4, 1e-5));
  }
  const auto wg = w.clone().requires_grad_();
  auto y = cs::linear(x, wg, bias);
  y.sum().backward();
  ASSERT_TRUE(wg.grad().defined());
  EXPECT_TRUE(torch::allclose(wg.grad(), x.reshape({6, 8}).sum(0).expand({5, 8}), 1e-4, 1e-4));
}

TEST(Gemm, BadShapesAreErrorsNamingThem) {
  const auto a = torch::randn({3, 4}), b = torch::randn({5, 6});
  try {
    cs::gemm(a, b);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("inner sizes differ"), std::string::npos) << e.what();
  }
  auto out = torch::empty({3, 3});
  EXPECT_THROW(cs::gemm_out(out, a, torch::randn({4, 6})), c10::Error);
  EXPECT_THROW(cs::gemm(a, torch::randn({4, 6}), torch::randn({5})), c10::Error);
  EXPECT_THROW(cs::gemm_out(torch::empty({3, 6}), a, torch::randn({4, 6}), 0.5), c10::Error);
}

TEST(Gemm, EmptyProducts) {
  auto out = torch::full({2, 3}, 7.0f);
  cs::gemm_out(out, torch::empty({2, 0}), torch::empty({0, 3}), 1);
  EXPECT_TRUE(torch::equal(out, torch::full({2, 3}, 7.0f)));
  EXPECT_EQ(cs::gemm(torch::empty({0, 4}), torch::randn({4, 3})).sizes(), (std::vector<int64_t>{0, 3}));
}

TEST(Gemm, PackedMatrixEqualsGemmForAnyRowCount) {
  torch::manual_seed(4);
  const auto w = torch::randn({1040, 65});  // [N, K], as a weight is stored; large enough to be packed
  const cs::PackedMatrix packed(w.t(), 32, 8);
  const auto bias = torch::randn({1040});
  // Each row count twice: its first product reads b as it lies, the next
  // ones the packed copy.
  for (int64_t rows : {32, 32, 31, 31, 7, 7, 1, 1, 64, 64}) {
    const auto a = torch::randn({rows, 65});
    auto out = torch::randn({rows, 1040});
    const auto before = out.clone();
    packed.gemm_out(out, a, 1, bias);
    EXPECT_LT((out - (before + torch::addmm(bias, a, w.t()))).abs().max().item<double>(), 1e-3) << rows;
    packed.gemm_out(out, a);
    EXPECT_LT((out - torch::mm(a, w.t())).abs().max().item<double>(), 1e-3) << rows;
  }
  // float64 (no oneDNN kernel) goes through LibTorch.
  const auto wd = w.to(torch::kDouble);
  const cs::PackedMatrix packed_double(wd, 8, 100);
  auto out = torch::empty({8, 65}, torch::kDouble);
  const auto a = torch::randn({8, 1040}, torch::kDouble);
  packed_double.gemm_out(out, a);
  EXPECT_TRUE(torch::allclose(out, torch::mm(a, wd), 1e-12, 1e-12));
}

TEST(Gemm, PackedColumnBlocksShareTheColumnsEvenly) {
  // 420 columns on two threads: 7 blocks of 64 split 4 and 3 (256 columns
  // on the busiest thread), 14 of 32 split 7 and 7 (224).
  EXPECT_EQ(cs::packed_column_block(32, 420, 2), 32);
  EXPECT_EQ(cs::packed_column_block(32, 650, 2), 48);    // 6 x 64 = 384 against 7 x 48 = 336
  EXPECT_EQ(cs::packed_column_block(32, 1680, 2), 64);   // 14 x 64 = 896 against 27 x 32 = 864: too little
  EXPECT_EQ(cs::packed_column_block(32, 1024, 2), 64);   // 16 blocks, 8 each
  EXPECT_EQ(cs::packed_column_block(32, 420, 1), 64);    // one thread: nothing to share
  EXPECT_EQ(cs::packed_column_block(2048, 420, 2), 64);  // many rows: oneDNN shares the rows
}

// The layout a PackedMatrix gets depends on the thread count it was packed
// at, and a product may run at another count (a direction run on a thread
// of its own, nn/concurrent.h): each layout must get its own primitive.
TEST(Gemm, PackedMatricesOfEitherLayoutEqualLibTorchAtEitherThreadCount) {
  torch::manual_seed(8);
  const auto w = torch::randn({420, 400});  // [N, K]: b = wᵀ is 400 x 420, packed
  const auto a = torch::randn({32, 400});
  const int previous = at::get_num_threads();
  std::vector<cs::MatmulPrecision> precisions = {cs::MatmulPrecision::kFloat32};
  if (cs::cpu_supports_bf16()) precisions.push_back(cs::MatmulPrecision::kBFloat16);
  for (const auto precision : precisions) {
    const cs::MatmulPrecisionGuard guard(precision);
    const bool bf16 = precision == cs::MatmulPrecision::kBFloat16;
    const auto rounded = [&](const torch::Tensor& t) { return bf16 ? t.to(torch::kBFloat16).to(torch::kFloat) : t; };
    const auto expected = torch::mm(rounded(a), rounded(w.t()));
    at::set_num_threads(2);
    const cs::PackedMatrix packed_two(w.t(), 32, 64);  // 32-column blocks
    at::set_num_threads(1);
    const cs::PackedMatrix packed_one(w.t(), 32, 64);  // 64-column blocks
    for (int threads : {1, 2, 1}) {
      at::set_num_threads(threads);
      for (const cs::PackedMatrix* packed : {&packed_one, &packed_two, &packed_one}) {
        for (int repeat = 0; repeat < 3; ++repeat) {  // the first product of a row count reads b as it lies
          auto out = torch::full({32, 420}, 7.0f);
          packed->gemm_out(out, a);
          EXPECT_LT((out - expected).abs().max().item<double>(), 1e-3)
              << cs::to_string(precision) << ", " << threads << " thread(s), packed at "
              << (packed == &packed_two ? 2 : 1) << ", product " << repeat;
        }
      }
    }
  }
  at::set_num_threads(previous);
}

// A batch of new sizes (a character LSTM's word count, a batch's token
// count) must not build a primitive per size: building one takes up to 3 ms,
// more than the product.
TEST(Gemm, NewSizesReuseOnePrimitivePerLayout) {
  if (cs::gemm_backend() != "onednn") GTEST_SKIP() << "CELLSTATE_GEMM=torch";
  torch::manual_seed(5);
  const auto w = torch::randn({100, 25});
  const auto bias = torch::randn({100});
  for (bool ta : {false, true}) {
    for (double beta : {0.0, 1.0}) {
      auto product = [&](int64_t rows) {
        const auto x = ta ? torch::randn({25, rows}).t() : torch::randn({rows, 25});
        auto out = torch::zeros({rows, 100});
        cs::gemm_out(out, x, w.t(), beta, bias);
        EXPECT_LT((out - torch::addmm(bias, x, w.t())).abs().max().item<double>(), 1e-4) << rows;
      };
      product(3);
      const auto built = cs::gemm_counters().primitives_built;
      for (int64_t rows = 200; rows < 240; ++rows) product(rows);
      EXPECT_EQ(cs::gemm_counters().primitives_built, built) << "ta " << ta << " beta " << beta;
      EXPECT_STRNE(cs::gemm_counters().last_kernel, "torch");
    }
  }
  // Weight gradients: the inner size (rows of a batch) varies.
  const auto dy = torch::randn({50, 100});
  cs::gemm(dy.t(), torch::randn({50, 25}));
  const auto built = cs::gemm_counters().primitives_built;
  for (int64_t rows = 60; rows < 80; ++rows) {
    const auto g = torch::randn({rows, 100}), x = torch::randn({rows, 25});
    EXPECT_LT((cs::gemm(g.t(), x) - torch::mm(g.t(), x)).abs().max().item<double>(), 1e-3) << rows;
  }
  EXPECT_EQ(cs::gemm_counters().primitives_built, built);
}

// A packed matrix gets a primitive for a row count when the count comes
// back, and a small one is not packed at all.
// A recurrence's per-step form: rows addressed by pointer and row stride
// (parts of [T, B, X] buffers), the same products and primitives as the
// tensor form.
TEST(Gemm, PackedRowsByPointerEqualTheTensorForm) {
  torch::manual_seed(8);
  const auto w = torch::randn({800, 200});
  const auto bias = torch::randn({800});
  std::vector<cs::MatmulPrecision> precisions{cs::MatmulPrecision::kFloat32};
  if (cs::cpu_supports_bf16()) precisions.push_back(cs::MatmulPrecision::kBFloat16);
  for (const auto precision : precisions) {
    cs::MatmulPrecisionGuard guard(precision);
    const cs::PackedMatrix packed(w.t(), 16, 40);
    // a: 11 rows of a [16, 300] buffer (row stride 300); out: 11 rows of [16, 1000].
    const auto a_buffer = torch::randn({16, 300});
    const auto a = a_buffer.narrow(1, 50, 200).narrow(0, 0, 11);
    for (bool accumulate : {false, true}) {
      auto out_buffer = torch::full({16, 1000}, 7.0f);
      auto expected = out_buffer.narrow(1, 100, 800).narrow(0, 0, 11).clone();
      packed.gemm_out(expected, a, accumulate ? 1 : 0, bias);
      for (int use = 0; use < 3; ++use) {  // b as it lies first, then the row count's own primitive
        auto target = torch::full({16, 1000}, 7.0f);
        const auto before = cs::gemm_counters().primitives_built;
        packed.gemm_out(cs::MatrixRows{target.data_ptr<float>() + 100, 11, 800, 1000},
                        cs::MatrixRows{a_buffer.data_ptr<float>() + 50, 11, 200, 300}, accumulate ? 1 : 0,
                        bias.data_ptr<float>());
        EXPECT_LE(cs::gemm_counters().primitives_built, before + 1);
        EXPECT_TRUE(torch::allclose(target.narrow(1, 100, 800).narrow(0, 0, 11), expected, 1e-5, 1e-4))
            << cs::to_string(precision) << " use " << use;
        // Only the addressed rows and columns are written.
        EXPECT_TRUE(torch::equal(target.narrow(0, 11, 5), torch::full({5, 1000}, 7.0f)));
        EXPECT_TRUE(torch::equal(target.narrow(1, 0, 100), torch::full({16, 100}, 7.0f)));
      }
    }
    // A row count's primitive comes on the same product as in the tensor
    // form: a matrix for one product (bf16: on the 8th of a row count; a
    // row count no other test uses, as primitives are kept per thread).
    const cs::PackedMatrix once(w.t(), 280, 1);
    const auto x = torch::randn({280, 200});
    auto y = torch::empty({280, 800});
    // (b as it lies runs on one runtime-shape primitive per layout: built
    // by this first product of another row count.)
    once.gemm_out(cs::MatrixRows{y.data_ptr<float>(), 5, 800, 800}, cs::MatrixRows{x.data_ptr<float>(), 5, 200, 200});
    const auto built = cs::gemm_counters().primitives_built;
    const int builds_on = precision == cs::MatmulPrecision::kBFloat16 ? 8 : 2;
    for (int use = 1; use <= builds_on; ++use) {
      once.gemm_out(cs::MatrixRows{y.data_ptr<float>(), 280, 800, 800},
                    cs::MatrixRows{x.data_ptr<float>(), 280, 200, 200});
      EXPECT_EQ(cs::gemm_counters().primitives_built, built + (use == builds_on ? 1 : 0)) << use;
    }
  }
  const cs::PackedMatrix packed(w.t(), 16, 40);
  auto out = torch::empty({4, 800});
  const auto a = torch::randn({4, 200});
  EXPECT_THROW(packed.gemm_out(cs::MatrixRows{out.data_ptr<float>(), 4, 800, 800},
                               cs::MatrixRows{a.data_ptr<float>(), 4, 199, 200}),
               c10::Error);
  EXPECT_THROW(packed.gemm_out(cs::MatrixRows{out.data_ptr<float>(), 4, 800, 700},
                               cs::MatrixRows{a.data_ptr<float>(), 4, 200, 200}),
               c10::Error);
  EXPECT_THROW(packed.gemm_out(cs::MatrixRows{out.data_ptr<float>(), 4, 800, 800},
                               cs::MatrixRows{a.data_ptr<float>(), 4, 200, 200}, 0.5),
               c10::Error);
}

TEST(Gemm, PackedRowCountsGetAPrimitiveWhenTheyRecur) {
  if (cs::gemm_backend() != "onednn") GTEST_SKIP() << "CELLSTATE_GEMM=torch";
  torch::manual_seed(6);
  const auto w = torch::randn({800, 200});
  const cs::PackedMatrix packed(w.t(), 16, 40);
  auto product = [&](int64_t rows) {
    const auto h = torch::randn({rows, 200});
    auto out = torch::empty({rows, 800});
    packed.gemm_out(out, h);
    EXPECT_LT((out - torch::mm(h, w.t())).abs().max().item<double>(), 1e-3) << rows;
    return cs::gemm_counters();
  };
  const auto first = product(13);  // the first product of 13 rows: b as it lies
  EXPECT_STRNE(first.last_kernel, "torch");
  const auto second = product(13);
  EXPECT_EQ(second.primitives_built, first.primitives_built + 1) << "13 rows came back: a primitive of its own";
  EXPECT_EQ(product(13).primitives_built, second.primitives_built);
  EXPECT_STRNE(second.last_kernel, first.last_kernel) << "the packed copy should have its own kernel";
  // bfloat16: a packed bfloat16 copy, a primitive per recurring row count
  // as in float32, the products those of the rounded operands; a matrix
  // packed for one product (an input projection, whose row count changes
  // with every batch) reads b as it lies: no primitive per row count met
  // a few times.
  if (cs::cpu_supports_bf16()) {
    cs::MatmulPrecisionGuard bf16(cs::MatmulPrecision::kBFloat16);
    const auto rounded = [](const torch::Tensor& t) { return t.to(torch::kBFloat16).to(torch::kFloat); };
    const cs::PackedMatrix packed_bf16(w.t(), 16, 40);
    const auto h = torch::randn({13, 200});
    auto out = torch::empty({13, 800});
    packed_bf16.gemm_out(out, h);
    const auto before = cs::gemm_counters();
    packed_bf16.gemm_out(out, h);
    EXPECT_EQ(cs::gemm_counters().primitives_built, before.primitives_built + 1);
    EXPECT_STRNE(cs::gemm_counters().last_kernel, before.last_kernel) << "the packed copy should have its own kernel";
    EXPECT_LT((out - torch::mm(rounded(h), rounded(w.t()))).abs().max().item<double>(), 1e-3);
    auto sum = torch::ones({13, 800});
    packed_bf16.gemm_out(sum, h, 1);
    packed_bf16.gemm_out(sum, h, 1);
    EXPECT_LT((sum - 1 - torch::mm(rounded(h), rounded(w.t())) * 2).abs().max().item<double>(), 1e-3);

    const cs::PackedMatrix once(w.t(), 300, 1);
    auto warm = torch::empty({5, 800});
    once.gemm_out(warm, torch::randn({5, 200}));
    const auto built = cs::gemm_counters().primitives_built;
    for (int64_t rows = 250; rows <= 260; ++rows) {
      const auto x = torch::randn({rows, 200});
      auto y = torch::empty({rows, 800});
      once.gemm_out(y, x);
      once.gemm_out(y, x);
      EXPECT_LT((y - torch::mm(rounded(x), rounded(w.t()))).abs().max().item<double>(), 1e-3) << rows;
    }
    EXPECT_EQ(cs::gemm_counters().primitives_built, built);
    // ...until a row count keeps coming back (8 products): then it gets
    // its primitive.
    const auto x = torch::randn({300, 200});
    auto y = torch::empty({300, 800});
    for (int use = 0; use < 8; ++use) once.gemm_out(y, x);
    EXPECT_EQ(cs::gemm_counters().primitives_built, built + 1);
    EXPECT_LT((y - torch::mm(rounded(x), rounded(w.t()))).abs().max().item<double>(), 1e-3);
  }

  const auto small = torch::randn({100, 25});
  const cs::PackedMatrix unpacked(small.t(), 300, 20);
  auto out = torch::empty({250, 100});
  const auto h = torch::randn({250, 25});
  unpacked.gemm_out(out, h);
  const auto built = cs::gemm_counters().primitives_built;
  for (int64_t rows = 1; rows <= 250; rows += 7) unpacked.gemm_out(out.narrow(0, 0, rows), h.narrow(0, 0, rows));
  EXPECT_EQ(cs::gemm_counters().primitives_built, built);
  EXPECT_TRUE(torch::allclose(out, torch::mm(h, small.t()), 1e-4, 1e-4));
}

namespace {

std::atomic<int64_t> g_signals{0};

extern "C" void count_signal(int) { g_signals.fetch_add(1, std::memory_order_relaxed); }

/// The child of Gemm.SignalsDuringProductsLeaveTheHeapIntact: 0.7 s of
/// float32 products of the sizes oneDNN's nocopy kernels take, under a
/// SIGUSR1 every 20 us handled on an alternate stack. Exits 0; 2 on a wrong
/// result; 3 when the products did not run on the kernels or were not
/// interrupted (a test of nothing); a heap corruption aborts.
[[noreturn]] void signal_storm_child() {
  using namespace std::chrono_literals;
  at::set_num_threads(1);  // the thread the signals go to runs every kernel
  const cs::SignalStack stack;
  cs::install_signal_handler(SIGUSR1, count_signal, nullptr);
  const pthread_t target = pthread_self();
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    while (!stop) {
      pthread_kill(target, SIGUSR1);
      std::this_thread::sleep_for(20us);
    }
  });
  std::mt19937 rng(5);
  torch::manual_seed(5);
  int64_t products = 0, jit = 0, wrong = 0;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < 700ms) {
    const int64_t m = 16 + rng() % 64, k = 8 + rng() % 256, n = 32 + rng() % 256;
    const auto a = torch::randn({k, m}).t();  // column-major, as a weight gradient's dy^T
    const auto b = torch::randn({k, n});
    auto out = torch::randn({m, n});
    const auto expected = out + torch::mm(a, b);
    cs::gemm_out(out, a, b, 1, {});
    jit += std::string(cs::gemm_counters().last_kernel) == "gemm:jit";
    wrong += !torch::allclose(out, expected, 1e-4, 1e-4);
    ++products;
  }
  stop = true;
  sender.join();
  std::fprintf(stderr, "%lld products (%lld on gemm:jit), %lld signals, %lld wrong\n",
               static_cast<long long>(products), static_cast<long long>(jit),
               static_cast<long long>(g_signals.load()), static_cast<long long>(wrong));
  // Not a test of anything unless the products ran on the kernels and were interrupted.
  std::exit(wrong > 0 ? 2 : (jit < products / 2 || g_signals.load() < 1000) ? 3 : 0);
}

}  // namespace

// A signal's frame goes below the interrupted stack pointer, and oneDNN
// 2.6's JIT GEMM kernels (its float32 "nocopy" products, up to a few hundred
// rows and columns) point that into a heap buffer while they run. A storm
// of signals during such products, handled as InterruptGuard's signals are
// (util/interrupt.h: on an alternate stack), leaves the heap and the
// results intact. With the handler on the interrupted stack the child
// aborted within 0.1 s ("corrupted size vs. prev_size while consolidating").
TEST(Gemm, SignalsDuringProductsLeaveTheHeapIntact) {
  if (cs::gemm_backend() != "onednn") GTEST_SKIP() << "CELLSTATE_GEMM=torch: no oneDNN kernels to interrupt";
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";  // a fresh process: no threads but ours
  EXPECT_EXIT(signal_storm_child(), ::testing::ExitedWithCode(0), "");
}
