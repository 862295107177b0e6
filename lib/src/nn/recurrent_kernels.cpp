// Fused forward and hand-written backward through time for LSTM, GRU and RNN.
//
// Forward, per layer and direction:
//   XP = X·W_ihᵀ + b            one GEMM over all T·B rows
//   for each step: XP[t] += h·W_hhᵀ (one GEMM, written in place), then one
//   pass over memory applies the gate nonlinearities and the state update.
// Backward, walking the steps in reverse processing order:
//   one pass computes the pre-activation gate gradients dG[t] and the cell
//   gradient; one GEMM dh = dG[t]·W_hh; after the loop dW_ih = dGᵀ·X,
//   dW_hh = dGᵀ·H_prev, dX = dG·W_ih and the biases as one sum each.
//
// Variable lengths use the packed layout: the batch is sorted longest first,
// so the sequences active at step t are a prefix of the batch, and every GEMM
// and pass at that step only touches that prefix. Rows past the prefix keep
// their state, which is exactly the semantics of a packed sequence in both
// directions.

#include "recurrent_kernels.h"
#include "cellstate/util/fast_math.h"

#include "cellstate/nn/gemm.h"
#include "cellstate/nn/step_weights.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>

// The inner loops are independent across j; the pragma lets GCC vectorise
// them through the exp polynomial (this file is compiled with -fopenmp, for
// at::parallel_for's regions: lib/CMakeLists.txt).
#define CELLSTATE_SIMD _Pragma("omp simd")
// Kept out of line: inlined into the dispatch lambdas, GCC stops vectorising them.
#define CELLSTATE_NOINLINE __attribute__((noinline))

namespace cellstate::detail {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---------------------------------------------------------------------------
// Elementwise math. float uses a branch-free exp (fast_math.h) that the
// compiler vectorises; double uses libm for exactness.

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }
inline float tanh_(float x) { return 2.0f / (1.0f + fast_exp(-2.0f * x)) - 1.0f; }
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double tanh_(double x) { return std::tanh(x); }

// ---------------------------------------------------------------------------
// Per-step forward pass over rows [b0, b1) of the active prefix.

template <typename T>
struct StepForward {
  int64_t hidden;
  T* gates;       // [Bt, G*H]: pre-activations in, activations out when saving
  const T* gh;    // GRU: [Bt, 3H] = h·W_hhᵀ + b_hh
  T* h;           // [B, H] running hidden state, updated in place
  T* c;           // [B, H] running cell state (LSTM)
  T* y;           // [Bt, H] output of this step, or null (step API)
  T* save_h;      // [Bt, H] previous hidden state, or null
  T* save_c;      // [Bt, H] previous cell state (LSTM), or null
  T* save_tc;     // [Bt, H] tanh of the new cell state (LSTM), or null
  int64_t y_stride = 0;  // distance between y's rows: H, or D·H when a
                         // bidirectional layer's directions share one output
};

// Every kernel copies its pointers into __restrict__ locals so the compiler
// knows the rows do not alias and vectorises the inner loop.

template <typename T, bool kSave, bool kOut>
CELLSTATE_NOINLINE void lstm_forward_rows(const StepForward<T>& a, int64_t b0, int64_t b1) {
  const int64_t H = a.hidden;
  for (int64_t b = b0; b < b1; ++b) {
    T* __restrict__ gi = a.gates + b * 4 * H;
    T* __restrict__ gf = gi + H;
    T* __restrict__ gg = gi + 2 * H;
    T* __restrict__ go = gi + 3 * H;
    T* __restrict__ h = a.h + b * H;
    T* __restrict__ c = a.c + b * H;
    T* __restrict__ y = kOut ? a.y + b * a.y_stride : nullptr;
    T* __restrict__ sh = kSave ? a.save_h + b * H : nullptr;
    T* __restrict__ sc = kSave ? a.save_c + b * H : nullptr;
    T* __restrict__ st = kSave ? a.save_tc + b * H : nullptr;
    CELLSTATE_SIMD
    for (int64_t j = 0; j < H; ++j) {
      const T i = sigmoid(gi[j]);
      const T f = sigmoid(gf[j]);
      const T g = tanh_(gg[j]);
      const T o = sigmoid(go[j]);
      const T cp = c[j];
      const T cn = f * cp + i * g;
      const T tc = tanh_(cn);
      const T hn = o * tc;
      if (kSave) {
        sh[j] = h[j];
        sc[j] = cp;
        st[j] = tc;
        gi[j] = i;
        gf[j] = f;
        gg[j] = g;
        go[j] = o;
      }
      c[j] = cn;
      h[j] = hn;
      if (kOut) y[j] = hn;
    }
  }
}

template <typename T, bool kSave, bool kOut>
CELLSTATE_NOINLINE void gru_forward_rows(const StepForward<T>& a, int64_t b0, int64_t b1) {
  const int64_t H = a.hidden;
  for (int64_t b = b0; b < b1; ++b) {
    T* __restrict__ gr = a.gates + b * 3 * H;
    T* __restrict__ gz = gr + H;
    T* __restrict__ gn = gr + 2 * H;
    const T* __restrict__ hr = a.gh + b * 3 * H;
    const T* __restrict__ hz = hr + H;
    const T* __restrict__ hn_ = hr + 2 * H;
    T* __restrict__ h = a.h + b * H;
    T* __restrict__ y = kOut ? a.y + b * a.y_stride : nullptr;
    T* __restrict__ sh = kSave ? a.save_h + b * H : nullptr;
    CELLSTATE_SIMD
    for (int64_t j = 0; j < H; ++j) {
      const T r = sigmoid(gr[j] + hr[j]);
      const T z = sigmoid(gz[j] + hz[j]);
      const T n = tanh_(gn[j] + r * hn_[j]);
      const T hp = h[j];
      const T hn = (T(1) - z) * n + z * hp;
      if (kSave) {
        sh[j] = hp;
        gr[j] = r;
        gz[j] = z;
        gn[j] = n;
      }
      h[j] = hn;
      if (kOut) y[j] = hn;
    }
  }
}

template <typename T, bool kSave, bool kOut>
CELLSTATE_NOINLINE void rnn_forward_rows(const StepForward<T>& a, int64_t b0, int64_t b1) {
  const int64_t H = a.hidden;
  for (int64_t b = b0; b < b1; ++b) {
    T* __restrict__ g = a.gates + b * H;
    T* __restrict__ h = a.h + b * H;
    T* __restrict__ y = kOut ? a.y + b * a.y_stride : nullptr;
    T* __restrict__ sh = kSave ? a.save_h + b * H : nullptr;
    CELLSTATE_SIMD
    for (int64_t j = 0; j < H; ++j) {
      const T hn = tanh_(g[j]);
      if (kSave) {
        sh[j] = h[j];
        g[j] = hn;
      }
      h[j] = hn;
      if (kOut) y[j] = hn;
    }
  }
}

// ---------------------------------------------------------------------------
// Per-step backward pass over rows [b0, b1) of the active prefix.

template <typename T>
struct StepBackward {
  int64_t hidden;
  const T* act;     // [Bt, G*H] saved activations
  const T* gh;      // GRU: [Bt, 3H] saved h·W_hhᵀ + b_hh
  const T* h_prev;  // [Bt, H]
  const T* c_prev;  // [Bt, H] (LSTM)
  const T* tc;      // [Bt, H] tanh(c') (LSTM)
  const T* dy;      // [Bt, H] gradient of this step's output
  T* dh;            // [B, H] in: dL/dh' (without dy); out: direct part of dL/dh
  T* dc;            // [B, H] in: dL/dc'; out: dL/dc (LSTM)
  T* dgates;        // [Bt, G*H] out: gradient of the input pre-activations
  T* dgh;           // [Bt, 3H] out: gradient of h·W_hhᵀ + b_hh (GRU)
};

template <typename T>
CELLSTATE_NOINLINE void lstm_backward_rows(const StepBackward<T>& a, int64_t b0, int64_t b1) {
  const int64_t H = a.hidden;
  for (int64_t b = b0; b < b1; ++b) {
    const T* __restrict__ ai = a.act + b * 4 * H;
    const T* __restrict__ af = ai + H;
    const T* __restrict__ ag = ai + 2 * H;
    const T* __restrict__ ao = ai + 3 * H;
    T* __restrict__ di = a.dgates + b * 4 * H;
    T* __restrict__ df = di + H;
    T* __restrict__ dg = di + 2 * H;
    T* __restrict__ do_ = di + 3 * H;
    const T* __restrict__ tcr = a.tc + b * H;
    const T* __restrict__ cp = a.c_prev + b * H;
    const T* __restrict__ dy = a.dy + b * H;
    const T* __restrict__ dhr = a.dh + b * H;
    T* __restrict__ dc = a.dc + b * H;
    CELLSTATE_SIMD
    for (int64_t j = 0; j < H; ++j) {
      const T i = ai[j], f = af[j], g = ag[j], o = ao[j];
      const T tc = tcr[j];
      const T dh = dhr[j] + dy[j];
      const T dct = dc[j] + dh * o * (T(1) - tc * tc);
      di[j] = dct * g * i * (T(1) - i);
      df[j] = dct * cp[j] * f * (T(1) - f);
      dg[j] = dct * i * (T(1) - g * g);
      do_[j] = dh * tc * o * (T(1) - o);
      dc[j] = dct * f;
    }
  }
}

template <typename T>
CELLSTATE_NOINLINE void gru_backward_rows(const StepBackward<T>& a, int64_t b0, int64_t b1) {
  const int64_t H = a.hidden;
  for (int64_t b = b0; b < b1; ++b) {
    const T* __restrict__ ar = a.act + b * 3 * H;
    const T* __restrict__ az = ar + H;
    const T* __restrict__ an = ar + 2 * H;
    const T* __restrict__ ghn = a.gh + b * 3 * H + 2 * H;
    T* __restrict__ dr = a.dgates + b * 3 * H;
    T* __restrict__ dz = dr + H;
    T* __restrict__ dn = dr + 2 * H;
    T* __restrict__ dhr = a.dgh + b * 3 * H;
    T* __restrict__ dhz = dhr + H;
    T* __restrict__ dhn = dhr + 2 * H;
    const T* __restrict__ hp = a.h_prev + b * H;
    const T* __restrict__ dy = a.dy + b * H;
    T* __restrict__ dh_io = a.dh + b * H;
    CELLSTATE_SIMD
    for (int64_t j = 0; j < H; ++j) {
      const T r = ar[j], z = az[j], n = an[j];
      const T dh = dh_io[j] + dy[j];
      const T dan = dh * (T(1) - z) * (T(1) - n * n);
      const T dar = dan * ghn[j] * r * (T(1) - r);
      const T daz = dh * (hp[j] - n) * z * (T(1) - z);
      dr[j] = dar;
      dz[j] = daz;
      dn[j] = dan;
      dhr[j] = dar;
      dhz[j] = daz;
      dhn[j] = dan * r;
      dh_io[j] = dh * z;
    }
  }
}

template <typename T>
CELLSTATE_NOINLINE void rnn_backward_rows(const StepBackward<T>& a, int64_t b0, int64_t b1) {
  const int64_t H = a.hidden;
  for (int64_t b = b0; b < b1; ++b) {
    const T* __restrict__ g = a.act + b * H;
    T* __restrict__ dg = a.dgates + b * H;
    const T* __restrict__ dhr = a.dh + b * H;
    const T* __restrict__ dy = a.dy + b * H;
    CELLSTATE_SIMD
    for (int64_t j = 0; j < H; ++j) {
      dg[j] = (dhr[j] + dy[j]) * (T(1) - g[j] * g[j]);
    }
  }
}

/// Splits rows over threads only when each chunk is worth a thread.
template <typename F>
void for_rows(int64_t rows, int64_t hidden, const F& f) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, hidden));
  at::parallel_for(0, rows, grain, f);
}

template <typename T, bool kSave, bool kOut>
void forward_rows_as(RecurrentKind kind, const StepForward<T>& a, int64_t b0, int64_t b1) {
  switch (kind) {
    case RecurrentKind::kLSTM: lstm_forward_rows<T, kSave, kOut>(a, b0, b1); break;
    case RecurrentKind::kGRU: gru_forward_rows<T, kSave, kOut>(a, b0, b1); break;
    case RecurrentKind::kRNN: rnn_forward_rows<T, kSave, kOut>(a, b0, b1); break;
  }
}

/// Saving implies an output; the step API has neither.
template <typename T>
void forward_rows(RecurrentKind kind, bool save, const StepForward<T>& a, int64_t rows) {
  for_rows(rows, a.hidden, [&](int64_t b0, int64_t b1) {
    if (save) {
      forward_rows_as<T, true, true>(kind, a, b0, b1);
    } else if (a.y) {
      forward_rows_as<T, false, true>(kind, a, b0, b1);
    } else {
      forward_rows_as<T, false, false>(kind, a, b0, b1);
    }
  });
}

template <typename T>
void backward_rows(RecurrentKind kind, const StepBackward<T>& a, int64_t rows) {
  for_rows(rows, a.hidden, [&](int64_t b0, int64_t b1) {
    switch (kind) {
      case RecurrentKind::kLSTM: lstm_backward_rows<T>(a, b0, b1); break;
      case RecurrentKind::kGRU: gru_backward_rows<T>(a, b0, b1); break;
      case RecurrentKind::kRNN: rnn_backward_rows<T>(a, b0, b1); break;
    }
  });
}

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

/// Step t's rows of a [T, B, width] buffer (null for an undefined one): a
/// pointer, not a view (a view costs about a microsecond a step).
template <typename T>
T* step_rows(const Tensor& buffer, int64_t t, int64_t B, int64_t width) {
  return buffer.defined() ? buffer.data_ptr<T>() + t * B * width : nullptr;
}

// ---------------------------------------------------------------------------
// The time loop.

/// Buffers a forward pass keeps for its backward pass.
struct Saved {
  Tensor act;     // [T, B, G*H] gate activations
  Tensor gh;      // [T, B, 3H] GRU hidden projections
  Tensor h_prev;  // [T, B, H]
  Tensor c_prev;  // [T, B, H] (LSTM)
  Tensor tc;      // [T, B, H] (LSTM)
};

struct LoopShape {
  int64_t T, B, H;
  bool reverse;
  const std::vector<int64_t>* batch_sizes;
  int64_t time(int64_t s) const { return reverse ? T - 1 - s : s; }
  int64_t active(int64_t t) const { return batch_sizes->empty() ? B : (*batch_sizes)[t]; }
  bool varlen() const { return !batch_sizes->empty(); }
};

/// Empty when every element gets written, zeros when padded rows may not be.
Tensor buffer(const LoopShape& s, at::IntArrayRef sizes, const torch::TensorOptions& opts) {
  return s.varlen() ? torch::zeros(sizes, opts) : torch::empty(sizes, opts);
}

/// The input projection of every step at once: X·W_ihᵀ + b, where b folds
/// b_hh in too except for the GRU (whose b_hn sits inside r ⊙ (…)).
Tensor input_projection(RecurrentKind kind, const Tensor& x, const LayerParams& p) {
  const auto x2 = x.reshape({-1, x.size(-1)});
  Tensor out;
  // W_ihᵀ packed into oneDNN's blocked layout when the product is large
  // enough to repay the copy (it reads W_ihᵀ, a transposed view, faster so).
  const PackedMatrix w_ih_t(p.w_ih.t(), x2.size(0));
  out = torch::empty({x2.size(0), p.w_ih.size(0)}, x2.options());
  if (p.b_ih.defined()) {
    w_ih_t.gemm_out(out, x2, 0, kind == RecurrentKind::kGRU ? p.b_ih : p.b_ih + p.b_hh);
  } else {
    w_ih_t.gemm_out(out, x2);
  }
  auto sizes = x.sizes().vec();
  sizes.back() = p.w_ih.size(0);
  return out.view(sizes);
}

/// h·W_hhᵀ (+ b_hh) for the GRU, written into gh.
void gru_hidden_projection(Tensor& gh, const Tensor& h, const LayerParams& p) {
  gemm_out(gh, h, p.w_hh.t(), 0, p.b_hh);
}

/// out (+)= a · b for `rows` rows of a step: a [rows, k] and out [rows, n]
/// at row strides lda and ldo (n, k: b's sizes), bias null or b's n. float
/// through the packed matrix's raw-row form (a step's operands are parts of
/// [T, B, ...] buffers, addressed without tensor views), double through
/// views (LibTorch's products).
template <typename T>
void step_product(const PackedMatrix& b, T* out, int64_t ldo, const T* a, int64_t lda, int64_t rows, int64_t k,
                  int64_t n, double beta, const Tensor& bias) {
  if constexpr (std::is_same_v<T, float>) {
    b.gemm_out(MatrixRows{out, rows, n, ldo}, MatrixRows{const_cast<float*>(a), rows, k, lda}, beta,
               bias.defined() ? bias.data_ptr<float>() : nullptr);
  } else {
    const auto options = torch::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    b.gemm_out(torch::from_blob(out, {rows, n}, {ldo, 1}, options),
               torch::from_blob(const_cast<T*>(a), {rows, k}, {lda, 1}, options), beta, bias);
  }
}

/// y_into: where y goes when defined (inference), a [T, B, H] view whose
/// rows are unit-stride (a direction's part of a [T, B, D·H] output); else a
/// buffer of its own. Either way its rows past a sequence's end are zeroed.
template <typename T>
LayerResult forward_loop(RecurrentKind kind, const LoopShape& s, const Tensor& x, const Tensor& h0,
                         const Tensor& c0, const LayerParams& p, Saved* saved, const Tensor& y_into = {}) {
  const auto opts = x.options();
  const int64_t T_ = s.T, B = s.B, H = s.H;
  Tensor xp = input_projection(kind, x, p);  // [T, B, G*H]
  Tensor h = h0.contiguous().clone();
  Tensor c = kind == RecurrentKind::kLSTM ? c0.contiguous().clone() : Tensor();
  Tensor y = y_into.defined() ? y_into : torch::empty({T_, B, H}, opts);
  const int64_t y_row = y.stride(1), y_step = y.stride(0);
  // Zeros where a sequence is over (rows past step t's active prefix): only
  // those rows, not the whole buffer first.
  if (s.varlen()) {
    T* const y0 = y.data_ptr<T>();
    for (int64_t t = 0; t < T_; ++t) {
      for (int64_t b = s.active(t); b < B; ++b) std::fill_n(y0 + t * y_step + b * y_row, H, T(0));
    }
  }
  Tensor gh_work;
  if (saved) {
    saved->h_prev = buffer(s, {T_, B, H}, opts);
    if (kind == RecurrentKind::kLSTM) {
      saved->c_prev = buffer(s, {T_, B, H}, opts);
      saved->tc = buffer(s, {T_, B, H}, opts);
    }
    if (kind == RecurrentKind::kGRU) saved->gh = buffer(s, {T_, B, 3 * H}, opts);
  } else if (kind == RecurrentKind::kGRU) {
    gh_work = torch::empty({B, 3 * H}, opts);
  }
  // W_hhᵀ in oneDNN's blocked layout once, for the T per-step products.
  const PackedMatrix w_hh_t(p.w_hh.t(), B, T_);
  const int64_t GH = gate_count(kind) * H;
  const Saved none;
  const Saved& kept = saved ? *saved : none;
  for (int64_t step = 0; step < T_; ++step) {
    const int64_t t = s.time(step);
    const int64_t bt = s.active(t);
    T* const gates = step_rows<T>(xp, t, B, GH);
    // The GRU's h·W_hhᵀ: saved per step in training, one workspace otherwise.
    T* const gh = saved ? step_rows<T>(saved->gh, t, B, 3 * H) : ptr<T>(gh_work);
    if (kind == RecurrentKind::kGRU) {
      step_product<T>(w_hh_t, gh, 3 * H, h.data_ptr<T>(), H, bt, H, 3 * H, 0, p.b_hh);
    } else {
      step_product<T>(w_hh_t, gates, GH, h.data_ptr<T>(), H, bt, H, GH, 1, Tensor());
    }
    StepForward<T> a{H,
                     gates,
                     gh,
                     h.data_ptr<T>(),
                     ptr<T>(c),
                     y.data_ptr<T>() + t * y_step,
                     step_rows<T>(kept.h_prev, t, B, H),
                     step_rows<T>(kept.c_prev, t, B, H),
                     step_rows<T>(kept.tc, t, B, H),
                     y_row};
    forward_rows<T>(kind, saved != nullptr, a, bt);
  }
  if (saved) saved->act = xp;
  return {y, h, c};
}

struct BackwardResult {
  Tensor dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh;
};

/// Where the weights' gradient terms go (nn/step_weights.h), for w_ih,
/// w_hh, b_ih and b_hh: None for a weight whose gradient is returned.
using WeightTerms = std::array<c10::IValue, 4>;

template <typename T>
BackwardResult backward_loop(RecurrentKind kind, const LoopShape& s, const Tensor& x,
                             const Tensor& w_ih, const Tensor& w_hh, const Saved& saved,
                             const Tensor& dy_in, const Tensor& dh_n, const Tensor& dc_n,
                             bool need_dx, const WeightTerms& terms) {
  const int64_t T_ = s.T, B = s.B, H = s.H, G = gate_count(kind);
  const auto opts = x.options();
  const Tensor dy = dy_in.contiguous();
  Tensor dh = dh_n.contiguous().clone();
  Tensor dc = kind == RecurrentKind::kLSTM ? dc_n.contiguous().clone() : Tensor();
  Tensor dgates = buffer(s, {T_, B, G * H}, opts);
  Tensor dgh = kind == RecurrentKind::kGRU ? buffer(s, {T_, B, 3 * H}, opts) : Tensor();
  const PackedMatrix w_hh_packed(w_hh, B, T_);  // for the T per-step dh products
  for (int64_t step = T_ - 1; step >= 0; --step) {
    const int64_t t = s.time(step);
    const int64_t bt = s.active(t);
    StepBackward<T> a{H,
                      step_rows<T>(saved.act, t, B, G * H),
                      step_rows<T>(saved.gh, t, B, 3 * H),
                      step_rows<T>(saved.h_prev, t, B, H),
                      step_rows<T>(saved.c_prev, t, B, H),
                      step_rows<T>(saved.tc, t, B, H),
                      step_rows<T>(dy, t, B, H),
                      dh.data_ptr<T>(),
                      ptr<T>(dc),
                      step_rows<T>(dgates, t, B, G * H),
                      step_rows<T>(dgh, t, B, 3 * H)};
    backward_rows<T>(kind, a, bt);
    if (kind == RecurrentKind::kGRU) {
      step_product<T>(w_hh_packed, dh.data_ptr<T>(), H, a.dgh, 3 * H, bt, 3 * H, H, 1, Tensor());
    } else {
      step_product<T>(w_hh_packed, dh.data_ptr<T>(), H, a.dgates, G * H, bt, G * H, H, 0, Tensor());
    }
  }
  BackwardResult r;
  const auto dg2 = dgates.view({T_ * B, G * H});
  const auto dgh2 = kind == RecurrentKind::kGRU ? dgh.view({T_ * B, 3 * H}) : dg2;
  if (need_dx) r.dx = gemm(dg2, w_ih).view({T_, B, w_ih.size(1)});
  const auto x2 = x.reshape({T_ * B, -1});
  const auto h_prev2 = saved.h_prev.view({T_ * B, H});
  if (!leave_gradient_term(terms[0], dg2, x2)) r.dw_ih = gemm(dg2.t(), x2);
  if (!leave_gradient_term(terms[1], dgh2, h_prev2)) r.dw_hh = gemm(dgh2.t(), h_prev2);
  if (!leave_gradient_term(terms[2], dg2)) r.db_ih = dg2.sum(0);
  if (!leave_gradient_term(terms[3], dgh2)) r.db_hh = dgh2.sum(0);
  r.dh0 = dh;
  r.dc0 = dc;
  return r;
}

// ---------------------------------------------------------------------------
// The autograd function around one direction of one layer.

// Autograd functions take no undefined tensors: an absent c0 or bias crosses
// the boundary as an empty tensor.
Tensor empty_if_absent(const Tensor& t, const Tensor& like) {
  return t.defined() ? t : torch::empty({0}, like.options());
}
Tensor absent_if_empty(const Tensor& t) { return t.numel() > 0 ? t : Tensor(); }

class RecurrentLayerFunction : public torch::autograd::Function<RecurrentLayerFunction> {
 public:
  // Inputs (edges): 0 x, 1 h0, 2 c0, 3 w_ih, 4 w_hh, 5 b_ih, 6 b_hh.
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& h0,
                               const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                               const Tensor& b_ih, const Tensor& b_hh, int64_t kind_index,
                               bool reverse, std::vector<int64_t> batch_sizes) {
    const auto kind = static_cast<RecurrentKind>(kind_index);
    const LoopShape shape{x.size(0), x.size(1), w_hh.size(1), reverse, &batch_sizes};
    Saved saved;
    LayerResult out;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cellstate_recurrent_forward", [&] {
      out = forward_loop<scalar_t>(kind, shape, x, h0, absent_if_empty(c0),
                                   {w_ih, w_hh, absent_if_empty(b_ih), absent_if_empty(b_hh)},
                                   &saved);
    });
    ctx->save_for_backward({x, w_ih, w_hh});
    ctx->saved_data["kind"] = kind_index;
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["batch_sizes"] = batch_sizes;
    ctx->saved_data["has_bias"] = b_ih.numel() > 0;
    // Weights passed through StepWeights get their gradient's terms left there.
    const std::array<const Tensor*, 4> weights{&w_ih, &w_hh, &b_ih, &b_hh};
    for (size_t i = 0; i < weights.size(); ++i)
      ctx->saved_data["terms" + std::to_string(i)] = gradient_terms_of(*weights[i]);
    ctx->saved_data["act"] = saved.act;
    ctx->saved_data["h_prev"] = saved.h_prev;
    if (saved.c_prev.defined()) {
      ctx->saved_data["c_prev"] = saved.c_prev;
      ctx->saved_data["tc"] = saved.tc;
    }
    if (saved.gh.defined()) ctx->saved_data["gh"] = saved.gh;
    if (kind == RecurrentKind::kLSTM) return {out.y, out.h_n, out.c_n};
    return {out.y, out.h_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto kind = static_cast<RecurrentKind>(ctx->saved_data["kind"].toInt());
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const auto batch_sizes = ctx->saved_data["batch_sizes"].toIntVector();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const auto vars = ctx->get_saved_variables();
    const Tensor &x = vars[0], &w_ih = vars[1], &w_hh = vars[2];
    Saved saved;
    saved.act = ctx->saved_data["act"].toTensor();
    saved.h_prev = ctx->saved_data["h_prev"].toTensor();
    if (kind == RecurrentKind::kLSTM) {
      saved.c_prev = ctx->saved_data["c_prev"].toTensor();
      saved.tc = ctx->saved_data["tc"].toTensor();
    }
    if (kind == RecurrentKind::kGRU) saved.gh = ctx->saved_data["gh"].toTensor();
    const LoopShape shape{x.size(0), x.size(1), w_hh.size(1), reverse, &batch_sizes};
    const Tensor dc_n = kind == RecurrentKind::kLSTM ? grads[2] : Tensor();
    // A weight's terms are left only in a pass that needs its gradient.
    WeightTerms terms;
    for (size_t i = 0; i < terms.size(); ++i)
      if (ctx->needs_input_grad(3 + i)) terms[i] = ctx->saved_data["terms" + std::to_string(i)];
    BackwardResult r;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cellstate_recurrent_backward", [&] {
      r = backward_loop<scalar_t>(kind, shape, x, w_ih, w_hh, saved, grads[0], grads[1], dc_n,
                                  ctx->needs_input_grad(0), terms);
    });
    if (!has_bias) r.db_ih = r.db_hh = Tensor();
    return {r.dx,   r.dh0,   r.dc0,    r.dw_ih,  r.dw_hh,
            r.db_ih, r.db_hh, Tensor(), Tensor(), Tensor()};
  }
};

bool any_requires_grad(const Tensor& x, const Tensor& h0, const Tensor& c0, const LayerParams& p) {
  for (const auto* t : {&x, &h0, &c0, &p.w_ih, &p.w_hh, &p.b_ih, &p.b_hh}) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

}  // namespace

LayerResult run_layer(RecurrentKind kind, bool reverse, const Tensor& x, const Tensor& h0,
                      const Tensor& c0, const LayerParams& params,
                      const std::vector<int64_t>& batch_sizes, const Tensor& y_into) {
  if (y_into.defined()) {
    const int64_t T = x.size(0), B = x.size(1), H = params.w_hh.size(1);
    TORCH_CHECK(y_into.dim() == 3 && y_into.size(0) == T && y_into.size(1) == B && y_into.size(2) == H &&
                    y_into.stride(2) == 1 && y_into.stride(0) == B * y_into.stride(1) &&
                    y_into.stride(1) >= H && y_into.dtype() == x.dtype(),
                "run_layer: expected an output view [", T, ", ", B, ", ", H, "] of ", x.dtype(),
                " with unit-stride rows, got ", y_into.sizes(), " strides ", y_into.strides(), " ", y_into.dtype());
  }
  if (torch::GradMode::is_enabled() && any_requires_grad(x, h0, c0, params)) {
    TORCH_CHECK(!y_into.defined(), "run_layer: an output view is for inference; this layer records gradients");
    TORCH_CHECK(product_precision(x) != MatmulPrecision::kInt8,
                "int8 products are for inference: a recurrence that records gradients needs fp32 or bf16");
    auto out = RecurrentLayerFunction::apply(
        x, h0, empty_if_absent(c0, x), params.w_ih, params.w_hh, empty_if_absent(params.b_ih, x),
        empty_if_absent(params.b_hh, x), static_cast<int64_t>(kind), reverse, batch_sizes);
    return {out[0], out[1], kind == RecurrentKind::kLSTM ? out[2] : Tensor()};
  }
  torch::NoGradGuard no_grad;
  const LoopShape shape{x.size(0), x.size(1), params.w_hh.size(1), reverse, &batch_sizes};
  LayerResult out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cellstate_recurrent_inference", [&] {
    out = forward_loop<scalar_t>(kind, shape, x, h0, c0, params, nullptr, y_into);
  });
  return out;
}

namespace {

/// Resizes a step workspace to [B, cols] of x's dtype.
void fit_workspace(Tensor& t, const Tensor& like, int64_t rows, int64_t cols) {
  if (!t.defined() || t.dtype() != like.dtype()) t = torch::empty({0}, like.options());
  t.resize_({rows, cols});
}

/// The rest of a step once gates holds x · W_ihᵀ + b_ih: the recurrence's
/// product, the nonlinearities and the state update in place.
void finish_step(RecurrentKind kind, Tensor& gates, Tensor& h, Tensor& c, const LayerParams& params,
                 Tensor& gh) {
  const int64_t B = gates.size(0), H = params.w_hh.size(1);
  if (kind == RecurrentKind::kGRU) {
    fit_workspace(gh, gates, B, 3 * H);
    gru_hidden_projection(gh, h, params);
  } else {
    gemm_out(gates, h, params.w_hh.t(), 1, params.b_hh);
  }
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "cellstate_recurrent_step", [&] {
    StepForward<scalar_t> a{H,       gates.data_ptr<scalar_t>(), ptr<scalar_t>(gh),
                            h.data_ptr<scalar_t>(), ptr<scalar_t>(c), nullptr,
                            nullptr, nullptr, nullptr};
    forward_rows<scalar_t>(kind, false, a, B);
  });
}

}  // namespace

void step_layer(RecurrentKind kind, const Tensor& x, Tensor& h, Tensor& c,
                const LayerParams& params, Tensor& gates, Tensor& gh) {
  torch::NoGradGuard no_grad;
  fit_workspace(gates, x, x.size(0), gate_count(kind) * params.w_hh.size(1));
  gemm_out(gates, x, params.w_ih.t(), 0, params.b_ih);
  finish_step(kind, gates, h, c, params, gh);
}

void step_layer_projected(RecurrentKind kind, const Tensor& input_gates, Tensor& h, Tensor& c,
                          const LayerParams& params, Tensor& gates, Tensor& gh) {
  torch::NoGradGuard no_grad;
  const int64_t G = gate_count(kind) * params.w_hh.size(1);
  TORCH_CHECK(input_gates.dim() == 2 && input_gates.size(0) == h.size(0) && input_gates.size(1) == G &&
                  input_gates.dtype() == h.dtype(),
              "step: expected input gates of shape [", h.size(0), ", ", G, "] and type ", h.dtype(),
              ", got ", input_gates.sizes(), " ", input_gates.dtype());
  fit_workspace(gates, h, h.size(0), G);
  gates.copy_(input_gates);
  finish_step(kind, gates, h, c, params, gh);
}

}  // namespace cellstate::detail
