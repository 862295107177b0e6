#include "cellstate/bench/bench.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <iomanip>
#include <ostream>
#include <stdexcept>

#include "cellstate/nn/gemm.h"
#include "cellstate/util/runtime.h"
#include "onednn_lstm.h"

namespace cellstate {
namespace {

using torch::Tensor;

template <typename F>
double time_ms(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

/// Median ms of `repeat` runs after `warmup` runs.
template <typename F>
double median_ms(int warmup, int repeat, F&& f) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> times;
  for (int i = 0; i < repeat; ++i) times.push_back(time_ms(f));
  return median(times);
}

/// Multiply-adds ×2 of the GEMMs of one forward pass over `tokens` real steps.
double forward_flops(const BenchConfig& c, double tokens) {
  const double gh = static_cast<double>(gate_count(c.kind) * c.hidden);
  const int dirs = c.bidirectional ? 2 : 1;
  double flops = 0;
  for (int64_t l = 0; l < c.layers; ++l) {
    const double in = l == 0 ? c.input : dirs * c.hidden;
    flops += dirs * 2.0 * tokens * gh * (in + c.hidden);
  }
  return flops;
}

Timing timing(double ms, double flops) { return {ms, flops / (ms * 1e6)}; }

/// The machine's attainable GEMM rate through `multiply` (out = a · b): the
/// best of several 1024³ matmuls (best, not median: it is a ceiling, and a
/// slow start of the thread pool must not lower it).
template <typename F>
double gemm_rate(int repeat, F&& multiply) {
  const int64_t n = 1024;
  auto a = torch::randn({n, n});
  auto b = torch::randn({n, n});
  auto c = torch::empty({n, n});
  for (int i = 0; i < 3; ++i) multiply(c, a, b);
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < std::max(5, repeat); ++i) {
    best = std::min(best, time_ms([&] { multiply(c, a, b); }));
  }
  return 2.0 * n * n * n / (best * 1e6);
}

}  // namespace

void validate(const BenchConfig& c) {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0) throw std::invalid_argument(std::string("--") + name + " must be positive, got " +
                                            std::to_string(v));
  };
  positive(c.layers, "layers");
  positive(c.hidden, "hidden");
  positive(c.input, "input");
  positive(c.batch, "batch");
  positive(c.seq, "seq");
  positive(c.repeat, "repeat");
  if (c.warmup < 0) throw std::invalid_argument("--warmup must be at least 0");
  if (c.threads < 0) throw std::invalid_argument("--threads must be at least 0 (0: every core)");
  if (c.step && c.bidirectional)
    throw std::invalid_argument("--step times generation-style stepping, which is unidirectional");
  try {
    check_cpu_supports(c.precision);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--precision " + to_string(c.precision) + ": " + e.what());
  }
}

BenchResult run_benchmark(const BenchConfig& c) {
  validate(c);
  BenchResult r;
  r.config = c;
  r.threads = configure_threads(c.threads);
  torch::manual_seed(c.seed);
  const MatmulPrecisionGuard precision(c.precision);

  const auto opts = RecurrentOptions(c.input, c.hidden)
                        .kind(c.kind)
                        .num_layers(c.layers)
                        .bidirectional(c.bidirectional);
  auto custom = make_recurrent(RecurrentOptions(opts).impl(Implementation::kCustom));
  auto builtin = make_recurrent(RecurrentOptions(opts).impl(Implementation::kBuiltin));
  {
    torch::NoGradGuard g;
    auto dst = builtin->named_parameters();
    for (const auto& p : custom->named_parameters()) dst[p.key()].copy_(p.value());
  }
  r.openblas_gemm_gflops = gemm_rate(c.repeat, [](Tensor& out, const Tensor& a, const Tensor& b) { torch::mm_out(out, a, b); });
  r.onednn_gemm_gflops = gemm_rate(c.repeat, [](Tensor& out, const Tensor& a, const Tensor& b) { gemm_out(out, a, b); });
  r.gemm_gflops = std::max(r.openblas_gemm_gflops, r.onednn_gemm_gflops);
  r.gemm_backend = gemm_backend();

  const auto x = torch::randn({c.seq, c.batch, c.input});
  Tensor lengths;
  double tokens = static_cast<double>(c.seq * c.batch);
  if (c.variable_lengths) {
    // Evenly spread over [seq/2, seq], longest first not required.
    lengths = torch::empty({c.batch}, torch::kLong);
    tokens = 0;
    for (int64_t b = 0; b < c.batch; ++b) {
      const int64_t lo = std::max<int64_t>(1, c.seq / 2);
      const int64_t len = c.batch == 1 ? c.seq : lo + (c.seq - lo) * ((b * 7) % c.batch) / (c.batch - 1);
      lengths[b] = len;
      tokens += static_cast<double>(len);
    }
  }
  const double fwd_flops = forward_flops(c, tokens);

  if (c.step) {
    std::vector<double> tc, tb;
    auto& cust = dynamic_cast<CustomRecurrentImpl&>(*custom);
    torch::NoGradGuard g;
    // Generation-style: the caller owns the state and steps it in place.
    auto run_custom = [&] {
      RecurrentState s{torch::zeros({c.layers, c.batch, c.hidden}),
                       c.kind == RecurrentKind::kLSTM ? torch::zeros({c.layers, c.batch, c.hidden})
                                                      : Tensor()};
      for (int64_t t = 0; t < c.seq; ++t) cust.step_(x[t], s);
    };
    auto run_builtin = [&] {
      RecurrentState s;
      for (int64_t t = 0; t < c.seq; ++t) s = builtin->forward(x[t].unsqueeze(0), {}, s).state;
    };
    for (int i = 0; i < c.warmup; ++i) run_custom(), run_builtin();
    for (int i = 0; i < c.repeat; ++i) {
      tc.push_back(time_ms(run_custom));
      tb.push_back(time_ms(run_builtin));
    }
    r.custom_step = timing(median(tc), fwd_flops);
    r.builtin_step = timing(median(tb), fwd_flops);
    r.step_ratio = r.custom_step.ms / r.builtin_step.ms;
    return r;
  }

  auto forward = [&](RecurrentModuleImpl& m) {
    torch::NoGradGuard g;
    m.forward(x, lengths);
  };
  auto train = [&](RecurrentModuleImpl& m) {
    m.zero_grad();
    auto xi = x.detach().requires_grad_(true);
    auto out = m.forward(xi, lengths);
    auto loss = out.output.sum() + out.state.h.sum();
    if (out.state.c.defined()) loss = loss + out.state.c.sum();
    loss.backward();
  };
  std::unique_ptr<detail::OneDnnLstm> onednn;
  try {
    onednn = std::make_unique<detail::OneDnnLstm>(c);
  } catch (const std::exception& e) {
    r.onednn_note = e.what();
  }
  // int8 products are inference only: no training pass to time.
  const bool train_too = c.precision != MatmulPrecision::kInt8;
  std::vector<double> fc, fb, fo, tc, tb;
  for (int i = 0; i < c.warmup; ++i) {
    forward(*custom), forward(*builtin);
    if (train_too) train(*custom), train(*builtin);
    if (onednn) onednn->forward();
  }
  // Interleaved, so that drifts of a noisy machine hit all alike; forward
  // passes and training passes in loops of their own, so that no forward
  // pass follows a training pass (on 2 threads a forward pass timed right
  // after the built-in module's training pass took ~1.5x its time, whichever
  // implementation it was).
  for (int i = 0; i < c.repeat; ++i) {
    fc.push_back(time_ms([&] { forward(*custom); }));
    fb.push_back(time_ms([&] { forward(*builtin); }));
    if (onednn) fo.push_back(time_ms([&] { onednn->forward(); }));
  }
  for (int i = 0; train_too && i < c.repeat; ++i) {
    tc.push_back(time_ms([&] { train(*custom); }));
    tb.push_back(time_ms([&] { train(*builtin); }));
  }
  if (onednn) {
    // The primitive runs every sequence at full length: its work is seq x batch tokens.
    r.onednn_forward = timing(median(fo), forward_flops(c, static_cast<double>(c.seq * c.batch)));
  }
  r.custom_forward = timing(median(fc), fwd_flops);
  r.builtin_forward = timing(median(fb), fwd_flops);
  r.forward_ratio = r.custom_forward.ms / r.builtin_forward.ms;
  if (train_too) {
    r.custom_train = timing(median(tc), 3 * fwd_flops);
    r.builtin_train = timing(median(tb), 3 * fwd_flops);
    r.train_ratio = r.custom_train.ms / r.builtin_train.ms;
  }
  if (onednn) r.forward_vs_onednn = r.custom_forward.ms / r.onednn_forward.ms;
  return r;
}

void print_table(std::ostream& out, const BenchResult& r, const std::string& title) {
  const auto& c = r.config;
  out << title << ": " << to_string(c.kind) << ", " << c.layers << " layer(s), hidden "
      << c.hidden << ", input " << c.input << ", batch " << c.batch << ", seq " << c.seq << ", "
      << (c.bidirectional ? "bidirectional" : "unidirectional") << ", "
      << (c.variable_lengths ? "variable lengths" : "equal lengths") << ", " << r.threads
      << " thread(s), " << to_string(c.precision) << " products, median of " << c.repeat << "\n";
  out << std::fixed << std::setprecision(1);
  out << "GEMM rate (1024x1024x1024 matmul): OpenBLAS (float32) " << r.openblas_gemm_gflops << ", oneDNN ("
      << to_string(c.precision) << ") " << r.onednn_gemm_gflops << " GFLOP/s; \"of GEMM\" is of the better; custom products through "
      << r.gemm_backend << "\n";
  auto pct = [&](const Timing& t) { return 100.0 * t.gflops / r.gemm_gflops; };
  auto row = [&](const char* name, const Timing& a, const Timing* b) {
    out << std::left << std::setw(9) << name << std::right << std::setw(12) << a.ms
        << std::setw(10) << a.gflops << std::setw(8) << pct(a) << "%";
    if (b) out << std::setw(12) << b->ms << std::setw(10) << b->gflops << std::setw(8) << pct(*b) << "%";
    out << "\n";
  };
  if (c.step) {
    out << "impl     step-seq ms   GFLOP/s  of GEMM\n";
    row("custom", r.custom_step, nullptr);
    row("builtin", r.builtin_step, nullptr);
    out << std::setprecision(3) << "step_ratio (custom/builtin time): " << r.step_ratio << "\n";
    return;
  }
  const bool trained = c.precision != MatmulPrecision::kInt8;
  out << "impl     forward ms   GFLOP/s  of GEMM" << (trained ? "    train ms   GFLOP/s  of GEMM" : "") << "\n";
  row("custom", r.custom_forward, trained ? &r.custom_train : nullptr);
  row("builtin", r.builtin_forward, trained ? &r.builtin_train : nullptr);
  if (r.onednn_note.empty()) row("onednn", r.onednn_forward, nullptr);
  out << std::setprecision(3) << "forward_ratio (custom/builtin time): " << r.forward_ratio << "\n";
  if (trained)
    out << "train_ratio (custom/builtin time):   " << r.train_ratio << "\n";
  else
    out << "training: not timed (int8 products are inference only); the built-in module runs the custom kernels "
           "under int8, oneDNN's LSTM primitive runs in "
        << (cpu_supports_bf16() ? "bf16" : "fp32") << "\n";
  if (r.onednn_note.empty())
    out << "forward_vs_onednn (custom/oneDNN LSTM primitive time): " << r.forward_vs_onednn
        << (c.variable_lengths ? " (the primitive runs every sequence at full length)" : "") << "\n";
  else
    out << "oneDNN LSTM primitive: not timed (" << r.onednn_note << ")\n";
}

nlohmann::json to_json(const BenchResult& r) {
  const auto& c = r.config;
  auto t = [](const Timing& x) { return nlohmann::json{{"ms", x.ms}, {"gflops", x.gflops}}; };
  nlohmann::json j{{"rnn", to_string(c.kind)},
                   {"layers", c.layers},
                   {"hidden", c.hidden},
                   {"input", c.input},
                   {"batch", c.batch},
                   {"seq", c.seq},
                   {"bidirectional", c.bidirectional},
                   {"variable_lengths", c.variable_lengths},
                   {"step", c.step},
                   {"threads", r.threads},
                   {"precision", to_string(c.precision)},
                   {"repeat", c.repeat},
                   {"gemm_gflops", r.gemm_gflops},
                   {"openblas_gemm_gflops", r.openblas_gemm_gflops},
                   {"onednn_gemm_gflops", r.onednn_gemm_gflops},
                   {"gemm_backend", r.gemm_backend}};
  if (c.step) {
    j["custom_step"] = t(r.custom_step);
    j["builtin_step"] = t(r.builtin_step);
    j["step_ratio"] = r.step_ratio;
  } else {
    j["custom_forward"] = t(r.custom_forward);
    j["builtin_forward"] = t(r.builtin_forward);
    j["forward_ratio"] = r.forward_ratio;
    if (c.precision != MatmulPrecision::kInt8) {  // int8: inference only
      j["custom_train"] = t(r.custom_train);
      j["builtin_train"] = t(r.builtin_train);
      j["train_ratio"] = r.train_ratio;
      j["custom_train_fraction_of_gemm"] = r.custom_train.gflops / r.gemm_gflops;
    }
    if (r.onednn_note.empty()) {
      j["onednn_forward"] = t(r.onednn_forward);
      j["forward_vs_onednn"] = r.forward_vs_onednn;
    } else {
      j["onednn_note"] = r.onednn_note;
    }
  }
  return j;
}

}  // namespace cellstate
