// cellstate-bench's measurements (bench/bench.h): every implementation is
// timed at the precision asked for, oneDNN's LSTM primitive included, and
// bf16 is refused where the CPU would only emulate it.
#include <gtest/gtest.h>

#include <sstream>

#include <stdexcept>

#include "cellstate/bench/bench.h"

namespace cellstate {
namespace {

BenchConfig tiny() {
  BenchConfig c;
  c.layers = 2;
  c.hidden = 16;
  c.input = 16;
  c.batch = 3;
  c.seq = 5;
  c.threads = 1;
  c.repeat = 1;
  c.warmup = 0;
  return c;
}

TEST(Bench, TimesEveryImplementationAtThePrecisionAskedFor) {
  for (auto precision : {MatmulPrecision::kFloat32, MatmulPrecision::kBFloat16}) {
    if (precision == MatmulPrecision::kBFloat16 && !cpu_supports_bf16()) continue;
    SCOPED_TRACE(to_string(precision));
    auto c = tiny();
    c.precision = precision;
    const auto r = run_benchmark(c);
    EXPECT_EQ(r.onednn_note, "") << "oneDNN's primitive was not timed";
    for (const auto* t : {&r.custom_forward, &r.builtin_forward, &r.custom_train, &r.builtin_train,
                          &r.onednn_forward}) {
      EXPECT_GT(t->ms, 0.0);
      EXPECT_GT(t->gflops, 0.0);
    }
    const auto j = to_json(r);
    EXPECT_EQ(j.at("precision"), to_string(precision));
    EXPECT_GT(j.at("forward_vs_onednn").get<double>(), 0.0);
    // The thread's precision is as it was.
    EXPECT_EQ(matmul_precision(), MatmulPrecision::kFloat32);
  }
}

TEST(Bench, Int8TimesForwardPassesOnly) {
  if (!cpu_supports_int8()) GTEST_SKIP() << "this CPU has no int8 kernels";
  auto c = tiny();
  c.precision = MatmulPrecision::kInt8;
  const auto r = run_benchmark(c);
  EXPECT_GT(r.custom_forward.ms, 0.0);
  EXPECT_GT(r.builtin_forward.ms, 0.0);
  EXPECT_EQ(r.custom_train.ms, 0.0) << "int8 is inference only";
  const auto j = to_json(r);
  EXPECT_EQ(j.at("precision"), "int8");
  EXPECT_FALSE(j.contains("train_ratio"));
  std::ostringstream table;
  print_table(table, r, "bench");
  EXPECT_NE(table.str().find("training: not timed"), std::string::npos) << table.str();
  EXPECT_EQ(matmul_precision(), MatmulPrecision::kFloat32);
}

TEST(Bench, RefusesBf16WhereTheCpuLacksIt) {
  auto c = tiny();
  c.precision = MatmulPrecision::kBFloat16;
  if (cpu_supports_bf16()) {
    EXPECT_NO_THROW(validate(c));
  } else {
    try {
      validate(c);
      ADD_FAILURE() << "bf16 accepted on a CPU without it";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("AVX512_BF16"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace cellstate
