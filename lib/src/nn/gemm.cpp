#include "cellstate/nn/gemm.h"
#include "cellstate/nn/step_weights.h"

#include "cellstate/nn/concurrent.h"
#include "cellstate/nn/quantize.h"

#include <torch/torch.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

namespace cellstate {

namespace {

bool use_onednn() {
  static const bool onednn = [] {
    const char* env = std::getenv("CELLSTATE_GEMM");
    return env == nullptr || std::strcmp(env, "torch") != 0;
  }();
  return onednn;
}

/// Strides of a 2-D operand oneDNN reads as it is: one unit stride, none
/// zero or negative.
bool plain_strides(int64_t stride0, int64_t stride1) {
  return stride0 > 0 && stride1 > 0 && (stride0 == 1 || stride1 == 1);
}

/// A 2-D view oneDNN can read as it is.
bool plain_2d(const torch::Tensor& t) { return t.dim() == 2 && plain_strides(t.stride(0), t.stride(1)); }

/// A product's shape, layouts and arithmetic, and the thread count its
/// primitive was built for: oneDNN splits the work when it builds one, so a
/// thread that runs products alone (detail::run_concurrently) needs its own.
struct GemmKey {
  int64_t m, n, k, a0, a1, b0, b1, c0, c1;
  bool bias, accumulate;
  MatmulPrecision operands;
  int threads = at::get_num_threads();
  bool operator==(const GemmKey& o) const {
    return m == o.m && n == o.n && k == o.k && a0 == o.a0 && a1 == o.a1 && b0 == o.b0 && b1 == o.b1 &&
           c0 == o.c0 && c1 == o.c1 && bias == o.bias && accumulate == o.accumulate && operands == o.operands &&
           threads == o.threads;
  }
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& key) const {
    const int64_t v[] = {key.m, key.n, key.k, key.a0, key.a1, key.b0, key.b1, key.c0, key.c1};
    size_t h = (key.bias ? 1u : 0u) | (key.accumulate ? 2u : 0u) | (static_cast<size_t>(key.operands) << 2) |
               (static_cast<size_t>(key.threads) << 4);
    for (int64_t x : v) h = h * 1000003u ^ std::hash<int64_t>()(x);
    return h;
  }
};

dnnl::memory::data_type operand_type(MatmulPrecision operands) {
  switch (operands) {
    case MatmulPrecision::kBFloat16:
      return dnnl::memory::data_type::bf16;
    case MatmulPrecision::kInt8:
      return dnnl::memory::data_type::s8;
    default:
      return dnnl::memory::data_type::f32;
  }
}

/// A 2-D operand's sizes and strides, in elements: rows, cols, stride(0), stride(1).
using Shape = std::array<int64_t, 4>;

/// A plain 2-D operand as oneDNN reads it (plain_strides): its data and
/// shape, without a tensor, so that a product's slices cost no LibTorch
/// calls.
struct Matrix {
  void* data = nullptr;
  Shape shape{0, 0, 0, 0};

  static Matrix of(const torch::Tensor& t) { return {t.data_ptr(), {t.size(0), t.size(1), t.stride(0), t.stride(1)}}; }
  int64_t rows() const { return shape[0]; }
  int64_t cols() const { return shape[1]; }
  /// Columns [begin, end) of this matrix of `element_bytes`-byte elements.
  Matrix columns(int64_t begin, int64_t end, size_t element_bytes) const {
    return {static_cast<char*>(data) + begin * shape[3] * static_cast<int64_t>(element_bytes),
            {shape[0], end - begin, shape[2], shape[3]}};
  }
  dnnl::memory::desc desc(MatmulPrecision operands = MatmulPrecision::kFloat32) const {
    return dnnl::memory::desc({shape[0], shape[1]}, operand_type(operands), {shape[2], shape[3]});
  }
};

/// y[i] = x[i] rounded to bfloat16 (nearest even; NaN stays NaN), as the
/// bit pattern: LibTorch's conversion, in a loop GCC vectorises.
void round_to_bf16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    const bool nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
    y[i] = static_cast<uint16_t>(nan ? 0x7FC0u : rounded);
  }
}

/// Elements per task of a conversion: 64k.
constexpr int64_t kConvertGrain = int64_t{1} << 16;

/// The operands of a bfloat16 product, float32 values rounded to nearest
/// even. Strides are kept (b.t() stays a transposed view of a dense copy).
/// A dense float32 tensor (any order of its dimensions: a gradient's
/// transpose) is rounded by round_to_bf16 over its elements as they lie,
/// about twice as fast as LibTorch's conversion (the output layer's
/// gradient, 1,000-2,000 x 8,000, at every training step); others through
/// LibTorch.
torch::Tensor to_bf16(const torch::Tensor& t) {
  if (t.scalar_type() != torch::kFloat || !t.is_non_overlapping_and_dense() || !t.device().is_cpu())
    return t.to(torch::kBFloat16);
  auto result = torch::empty_strided(t.sizes(), t.strides(), t.options().dtype(torch::kBFloat16));
  const float* x = t.data_ptr<float>();
  auto* y = reinterpret_cast<uint16_t*>(result.data_ptr());
  at::parallel_for(0, t.numel(), kConvertGrain, [&](int64_t begin, int64_t end) {
    round_to_bf16(x + begin, y + begin, end - begin);
  });
  return result;
}

/// Per-thread scratch operands of one product (a left operand converted,
/// an int8 product's scales): a tensor of `sizes` and `type` over this
/// thread's buffer `slot`, which the next call for that slot overwrites.
/// LibTorch's narrow/view of a buffer tensor would cost a microsecond or
/// two through its dispatcher; from_blob makes the tensor directly.
enum ScratchSlot : int { kScratchBf16Rows, kScratchInt8Rows, kScratchScales, kScratchSlots };

/// `need` bytes of this thread's buffer `slot`, 64-byte aligned.
void* scratch_bytes(ScratchSlot slot, size_t need) {
  struct Buffer {
    std::unique_ptr<char[]> bytes;
    size_t capacity = 0;
  };
  thread_local std::array<Buffer, kScratchSlots> buffers;
  auto& buffer = buffers[slot];
  constexpr size_t kAlign = 64;  // as LibTorch's allocations: oneDNN's kernels read aligned rows faster
  if (buffer.capacity < need || buffer.bytes == nullptr) {
    buffer.capacity = std::max<size_t>(need, 16384);
    buffer.bytes = std::make_unique<char[]>(buffer.capacity + kAlign);
  }
  void* data = buffer.bytes.get();
  size_t space = buffer.capacity + kAlign;
  return std::align(kAlign, need, data, space);
}

torch::Tensor scratch(ScratchSlot slot, at::IntArrayRef sizes, torch::ScalarType type) {
  size_t need = c10::elementSize(type);
  for (int64_t size : sizes) need *= static_cast<size_t>(size);
  return torch::from_blob(scratch_bytes(slot, need), sizes, torch::TensorOptions().dtype(type));
}

/// A left operand a as bfloat16 for one product (to_bf16 without
/// LibTorch's per-call cost, a few microseconds: a per-step product of a
/// recurrence takes 10-20). Contiguous a of at most kRowsBufferElements
/// lands in this thread's buffer, which the next call overwrites: the
/// result is read within the product that asked for it, and no longer.
constexpr int64_t kRowsBufferElements = int64_t{1} << 16;

torch::Tensor rows_to_bf16(const torch::Tensor& a) {
  if (!a.is_contiguous() || a.scalar_type() != torch::kFloat) return to_bf16(a);
  const int64_t n = a.numel();
  torch::Tensor result;
  if (n <= kRowsBufferElements) {
    result = scratch(kScratchBf16Rows, a.sizes(), torch::kBFloat16);
  } else {
    result = torch::empty(a.sizes(), a.options().dtype(torch::kBFloat16));
  }
  const float* x = a.data_ptr<float>();
  auto* y = reinterpret_cast<uint16_t*>(result.data_ptr());
  at::parallel_for(0, n, kRowsBufferElements, [&](int64_t begin, int64_t end) {
    round_to_bf16(x + begin, y + begin, end - begin);
  });
  return result;
}

/// The same for rows the caller addresses (MatrixRows, a recurrence's
/// per-step operand): rounded into this thread's buffer, contiguous
/// [rows, cols]; valid until the next call.
uint16_t* rows_to_bf16(const MatrixRows& a) {
  auto* y = static_cast<uint16_t*>(scratch_bytes(kScratchBf16Rows, sizeof(uint16_t) * a.rows * a.cols));
  const int64_t grain = std::max<int64_t>(1, kRowsBufferElements / std::max<int64_t>(1, a.cols));
  at::parallel_for(0, a.rows, grain, [&](int64_t begin, int64_t end) {
    if (a.stride == a.cols) {
      round_to_bf16(a.data + begin * a.cols, y + begin * a.cols, (end - begin) * a.cols);
    } else {
      for (int64_t r = begin; r < end; ++r) round_to_bf16(a.data + r * a.stride, y + r * a.cols, a.cols);
    }
  });
  return y;
}

/// A left operand a [M, K] rounded to int8 with one scale (nn/gemm.h kInt8):
/// q [M, K] contiguous.
struct QuantizedRows {
  torch::Tensor q;
  float scale = 1;
};

QuantizedRows quantize_tensor(const torch::Tensor& a_in) {
  const auto a = a_in.contiguous();
  const float* x = a.data_ptr<float>();
  const int64_t n = a.numel();
  float amax = 0;
#pragma omp simd reduction(max : amax)
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  QuantizedRows r;
  r.scale = amax > 0 && std::isfinite(amax) ? amax / 127 : 1;
  // One buffer per thread, grown as needed: a fresh tensor per product costs
  // an allocation and its page faults (the input projections' are large).
  r.q = scratch(kScratchInt8Rows, a.sizes(), torch::kChar);
  auto* q = r.q.data_ptr<int8_t>();
  const float inverse = 1 / r.scale;
  // Clamped with comparisons and rounded to nearest even by adding and
  // subtracting 1.5 * 2^23 (exact for |v| <= 127): unlike std::min/max and
  // nearbyint, GCC vectorises this form (checked with -fopt-info-vec).
  constexpr float kRound = 12582912.0f;
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] * inverse;
    v = v < -127.0f ? -127.0f : v;
    v = v > 127.0f ? 127.0f : v;
    q[i] = static_cast<int8_t>(static_cast<int>((v + kRound) - kRound));
  }
  return r;
}

/// This thread's GemmCounters (nn/gemm.h).
thread_local GemmCounters t_counters;

/// Whether a runtime-shape primitive reads t as it lies (plain 2-D, its
/// leading stride covering the other dimension), and then whether t is
/// column-major (stride(0) == 1) rather than row-major.
bool runtime_layout(const Matrix& t, bool& columns) {
  const auto& [rows, cols, stride0, stride1] = t.shape;
  if (!plain_strides(stride0, stride1)) return false;
  columns = stride1 != 1;
  const int64_t leading = columns ? stride1 : stride0;
  return leading >= (columns ? rows : cols) || (columns ? cols : rows) == 1;
}

/// oneDNN's blocked layout of a [k, n] right operand with column blocks of
/// `block` (64, 48 or 32) for float32 or bfloat16 products.
dnnl::memory::format_tag blocked_tag(int64_t block, MatmulPrecision operands) {
  using tag = dnnl::memory::format_tag;
  const bool bf16 = operands == MatmulPrecision::kBFloat16;
  switch (block) {
    case 32: return bf16 ? tag::BA16a32b2a : tag::BA16a32b;
    case 48: return bf16 ? tag::BA16a48b2a : tag::BA16a48b;
    default: return bf16 ? tag::BA16a64b2a : tag::BA16a64b;
  }
}

/// What tells two layouts of the same shape apart, for primitive keys: a
/// hash of the descriptor's strides and inner blocks.
int64_t layout_id(const dnnl::memory::desc& d) {
  const auto& b = d.data.format_desc.blocking;
  size_t h = static_cast<size_t>(b.inner_nblks);
  for (int i = 0; i < d.data.ndims; ++i) h = h * 1000003u ^ std::hash<int64_t>()(b.strides[i]);
  for (int i = 0; i < b.inner_nblks; ++i) {
    h = h * 1000003u ^ std::hash<int64_t>()(b.inner_blks[i] * 16 + b.inner_idxs[i]);
  }
  return static_cast<int64_t>(h & 0x3fffffffffffffffULL);
}

/// The engine, a stream and the primitives this thread has built.
///
/// Two kinds of primitive (timed on this project's AMD EPYC, 2 threads,
/// against primitives built for the exact shape, at the apps' sizes from
/// 1 x 420 x 2000 to 2600 x 1120 x 650, float32, bfloat16 and int8):
/// - products with b as it lies run on one primitive per layout pattern
///   whose sizes and leading strides are given at run time (oneDNN's
///   gemm-based matmul, "gemm:jit"): built once in ~20-100 us, and as fast as
///   a primitive built for the exact shape or faster (brgemm: 0.3-3 ms to
///   build, which a batch of new sizes - a character LSTM's word count, a
///   batch's token count - paid on every call);
/// - float32 and bfloat16 products with b packed (PackedMatrix) need a
///   brgemm primitive for the exact row count (float32: about 2x the rate
///   of reading b as it lies at 16-32 rows; bfloat16 1.1-1.6x from 4 to 32
///   rows, 32 x 650 x 2600 on 2 threads 250 us against 300); one is built
///   when a row count comes back (kBuildOnUse), and a row count met once
///   runs on the runtime-shape primitive instead. int8 products are not
///   packed (the LSTM's default bench size: 20 ms against 21 packed).
class OneDnnGemm {
 public:
  OneDnnGemm() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  /// A packed row count's primitive is built on its kBuildOnUse-th product.
  static constexpr int kBuildOnUse = 2;
  /// ...and, for a bfloat16 PackedMatrix of a single product, on its
  /// kBuildOnUseOnce-th (PackedMatrix::PackedMatrix says why).
  static constexpr int kBuildOnUseOnce = 8;

  /// out = (accumulate ? out : 0) + a · b (+ bias), where a and b are
  /// already of the operand type `operands` (float32, bfloat16 or int8) and
  /// out is float32. bias (null: none) holds out.cols() float32 values.
  /// int8 products take `scales`, out.cols() values (the result is
  /// scales[n] times the integer sum), and no bias. False (nothing written)
  /// when no oneDNN kernel takes these layouts.
  bool run_any_shape(const Matrix& out, const Matrix& a, const Matrix& b, MatmulPrecision operands,
                     bool accumulate, const float* bias, const float* scales = nullptr) {
    Built* built = any_shape(out, a, b, operands, accumulate, bias != nullptr, scales != nullptr);
    if (built == nullptr) return false;
    execute(*built, out, a, operands, b.shape, [&] { return b.desc(operands); }, b.data, bias, scales);
    return true;
  }

  /// Whether run_any_shape would take these layouts (building its primitive
  /// for this thread if need be).
  bool takes_any_shape(const Matrix& out, const Matrix& a, const Matrix& b, MatmulPrecision operands,
                       bool accumulate, bool bias, bool scales) {
    return any_shape(out, a, b, operands, accumulate, bias, scales) != nullptr;
  }

  /// As run_any_shape for float32 or bfloat16 operands (a already of the
  /// operand type), with b `b_desc` at `b_data` in the blocked layout
  /// packed_layout(rows, ..., operands) gave: a primitive for this exact
  /// product. False (nothing written) when there is none yet or no oneDNN
  /// kernel takes it; the caller then reads b as it lies.
  bool run_packed(const Matrix& out, const Matrix& a, MatmulPrecision operands, const dnnl::memory::desc& b_desc,
                  void* b_data, int64_t rows, bool accumulate, const float* bias, int build_on_use = kBuildOnUse) {
    if (!plain_strides(a.shape[2], a.shape[3]) || !plain_strides(out.shape[2], out.shape[3])) return false;
    // b's layout (b0: packed_layout's choice for this thread count) and
    // the row bucket it was chosen for (b1) stand for b's strides.
    const GemmKey key{a.rows(),     out.cols(),    a.cols(), a.shape[2], a.shape[3], -layout_id(b_desc) - 1,
                      rows,         out.shape[2], out.shape[3], bias != nullptr, accumulate, operands};
    auto it = primitives_.find(key);
    if (it == primitives_.end()) {
      if (++uses_[key] < build_on_use) return false;
      if (uses_.size() >= 4096) uses_.clear();
      if (primitives_.size() >= 1024) primitives_.clear();  // shapes of a finished job
      it = primitives_
               .emplace(key, build(a.desc(operands), b_desc, out.desc(), bias != nullptr, accumulate,
                                   /*scaled=*/false, /*runtime_bias=*/false))
               .first;
    }
    if (!it->second.primitive) return false;
    // The key names b's layout (its b0), so this primitive always reads b in it.
    const Shape b_shape{a.cols(), out.cols(), -1, rows};
    execute(it->second, out, a, operands, b_shape, [&] { return b_desc; }, b_data, bias, nullptr);
    return true;
  }

  /// The blocked layout oneDNN picks for a k x n right operand of float32
  /// or bfloat16 `operands` when a has about `rows` rows (asked once per
  /// shape and power-of-two row bucket: a descriptor costs a millisecond,
  /// and a recurrence packs its weight on every call, for batches of any
  /// size).
  dnnl::memory::desc packed_layout(int64_t rows, int64_t k, int64_t n, MatmulPrecision operands) {
    using dnnl::memory;
    const auto type = operand_type(operands);
    const GemmKey key{rows, n, k, 0, 0, 0, 0, 0, 0, false, false, operands};
    auto it = layouts_.find(key);
    if (it == layouts_.end()) {
      if (layouts_.size() >= 256) layouts_.clear();
      const dnnl::matmul::primitive_desc probe(
          dnnl::matmul::desc(memory::desc({rows, k}, type, memory::format_tag::ab),
                             memory::desc({k, n}, type, memory::format_tag::any),
                             memory::desc({rows, n}, memory::data_type::f32, memory::format_tag::ab)),
          engine_);
      auto layout = probe.weights_desc();
      // oneDNN's usual choice, 64-column blocks, may share the columns
      // badly among the threads (packed_column_block in nn/gemm.h); the
      // same kernels take 48 and 32.
      const int64_t block = packed_column_block(rows, n, key.threads);
      if (block != 64 && layout == memory::desc({k, n}, type, blocked_tag(64, operands)))
        layout = memory::desc({k, n}, type, blocked_tag(block, operands));
      it = layouts_.emplace(key, layout).first;
    }
    return it->second;
  }

  const dnnl::engine& engine() const { return engine_; }
  dnnl::stream& stream() { return stream_; }

 private:
  /// A dnnl::memory kept from one product to the next of a primitive: made
  /// anew when the operand's shape changes, otherwise only pointed at the
  /// new data (making one allocates and fills a descriptor: with the
  /// argument map, about a third of a one-row bf16 product's own time).
  struct MemorySlot {
    Shape shape{-1, -1, -1, -1};
    dnnl::memory memory;

    template <class Desc>
    dnnl_memory_t bind(const Shape& now, void* data, const dnnl::engine& engine, Desc desc) {
      if (!memory || now != shape) {
        memory = dnnl::memory(desc(), engine, data);
        shape = now;
      } else {
        memory.set_data_handle(data);
      }
      return memory.get();
    }
  };

  struct Built {
    dnnl::matmul primitive;  // empty: no kernel takes the product
    const char* kernel = "";
    std::array<MemorySlot, 5> slots;  // source, weights, destination, bias, scales
  };

  /// The runtime-shape primitive for these layouts; null when no kernel takes them.
  Built* any_shape(const Matrix& out, const Matrix& a, const Matrix& b, MatmulPrecision operands, bool accumulate,
                   bool bias, bool scales) {
    bool a_columns = false, b_columns = false, c_columns = false;
    if (!runtime_layout(a, a_columns) || !runtime_layout(b, b_columns) || !runtime_layout(out, c_columns))
      return nullptr;
    const GemmKey key{-1, -1, -1, a_columns, 0, b_columns, 0, c_columns, 0, bias, accumulate, operands};
    auto it = primitives_.find(key);
    if (it == primitives_.end()) {
      const auto R = DNNL_RUNTIME_DIM_VAL;
      auto runtime = [&](bool columns, dnnl::memory::data_type type) {
        return dnnl::memory::desc({R, R}, type, columns ? dnnl::memory::dims{1, R} : dnnl::memory::dims{R, 1});
      };
      const auto type = operand_type(operands);
      it = primitives_
               .emplace(key, build(runtime(a_columns, type), runtime(b_columns, type),
                                   runtime(c_columns, dnnl::memory::data_type::f32), bias, accumulate,
                                   scales, /*runtime_bias=*/true))
               .first;
    }
    return it->second.primitive ? &it->second : nullptr;
  }

  static dnnl::memory::desc bias_desc(int64_t n) {
    return dnnl::memory::desc({1, n}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
  }

  /// Runs `built` on these operands (bias and scales as run_any_shape);
  /// b is `b_shape` at b_data, b_desc() its descriptor (asked only when
  /// b_shape changes).
  template <class BDesc>
  void execute(Built& built, const Matrix& out, const Matrix& a, MatmulPrecision operands, const Shape& b_shape,
               BDesc b_desc, void* b_data, const float* bias, const float* scales) {
    using dnnl::memory;
    auto& slots = built.slots;
    const int64_t n = out.cols();
    // oneDNN takes the pointers as void* (it reads bias and scales only).
    auto* bias_data = const_cast<float*>(bias);
    auto* scales_data = const_cast<float*>(scales);
    dnnl_exec_arg_t args[5];
    int count = 0;
    args[count++] = {DNNL_ARG_SRC, slots[0].bind(a.shape, a.data, engine_, [&] { return a.desc(operands); })};
    args[count++] = {DNNL_ARG_WEIGHTS, slots[1].bind(b_shape, b_data, engine_, b_desc)};
    args[count++] = {DNNL_ARG_DST, slots[2].bind(out.shape, out.data, engine_, [&] { return out.desc(); })};
    if (bias != nullptr)
      args[count++] = {DNNL_ARG_BIAS, slots[3].bind({n, 0, 0, 0}, bias_data, engine_, [&] { return bias_desc(n); })};
    if (scales != nullptr)
      args[count++] = {DNNL_ARG_ATTR_OUTPUT_SCALES, slots[4].bind({n, 0, 0, 0}, scales_data, engine_, [&] {
                         return memory::desc({n}, memory::data_type::f32, memory::format_tag::a);
                       })};
    dnnl::error::wrap_c_api(dnnl_primitive_execute(built.primitive.get(), stream_.get(), count, args),
                            "gemm: oneDNN could not run a matmul");
    stream_.wait();
    t_counters.last_kernel = built.kernel;
  }

  /// Empty where no kernel reads these layouts. `scaled`: per-column output
  /// scales given at run time (int8 products); `runtime_bias`: the bias's
  /// length is given at run time too.
  Built build(const dnnl::memory::desc& a, const dnnl::memory::desc& b, const dnnl::memory::desc& c, bool bias,
              bool accumulate, bool scaled, bool runtime_bias) {
    dnnl::primitive_attr attr;
    if (scaled) attr.set_output_scales(1 << 1, {DNNL_RUNTIME_F32_VAL});
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    try {
      const auto R = DNNL_RUNTIME_DIM_VAL;
      const auto bias_d = runtime_bias ? dnnl::memory::desc({1, R}, dnnl::memory::data_type::f32, {R, 1})
                                       : bias_desc(c.dims()[1]);
      const auto desc = bias ? dnnl::matmul::desc(a, b, bias_d, c) : dnnl::matmul::desc(a, b, c);
      const dnnl::matmul::primitive_desc pd(desc, attr, engine_);
      ++t_counters.primitives_built;
      return {dnnl::matmul(pd), pd.impl_info_str(), {}};
    } catch (const dnnl::error&) {
      return {};
    }
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::unordered_map<GemmKey, Built, GemmKeyHash> primitives_;
  std::unordered_map<GemmKey, int, GemmKeyHash> uses_;  // packed shapes without a primitive: products so far
  std::unordered_map<GemmKey, dnnl::memory::desc, GemmKeyHash> layouts_;
};

OneDnnGemm& this_thread_gemm() {
  thread_local OneDnnGemm gemm;
  return gemm;
}

}  // namespace

std::string gemm_backend() { return use_onednn() ? "onednn" : "torch"; }

GemmCounters gemm_counters() { return t_counters; }

// ---------------------------------------------------------------------------
// Precision

namespace {

/// The process default (a MatmulPrecision), for threads without a guard.
std::atomic<int>& default_precision() {
  static std::atomic<int> precision{static_cast<int>(MatmulPrecision::kFloat32)};
  return precision;
}

/// This thread's innermost guard's precision; -1: none.
thread_local int t_precision = -1;

}  // namespace

void check_cpu_supports(MatmulPrecision precision) {
  if (precision == MatmulPrecision::kBFloat16 && !cpu_supports_bf16())
    throw std::invalid_argument(
        "bf16 precision needs a CPU with AVX512_BF16 (or AMX); this one has neither, and emulated bfloat16 "
        "products would be slower than fp32");
  if (precision == MatmulPrecision::kInt8 && !cpu_supports_int8())
    throw std::invalid_argument(
        "int8 precision needs a CPU with AVX2 or AVX-512 (oneDNN's int8 kernels); this one has neither");
}

namespace {

void check_supported(MatmulPrecision precision) {
  try {
    check_cpu_supports(precision);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, e.what(), " (oneDNN's effective ISA: ", static_cast<int>(dnnl::get_effective_cpu_isa()),
                ")");
  }
}

}  // namespace

std::string to_string(MatmulPrecision precision) {
  switch (precision) {
    case MatmulPrecision::kBFloat16:
      return "bf16";
    case MatmulPrecision::kInt8:
      return "int8";
    default:
      return "fp32";
  }
}

MatmulPrecision parse_matmul_precision(const std::string& name) {
  if (name == "fp32") return MatmulPrecision::kFloat32;
  if (name == "bf16") return MatmulPrecision::kBFloat16;
  if (name == "int8") return MatmulPrecision::kInt8;
  throw std::invalid_argument("precision must be fp32, bf16 or int8, got '" + name + "'");
}

namespace {

/// Whether oneDNN's effective ISA (this CPU's, or lower by DNNL_MAX_CPU_ISA) is one of `isas`.
bool effective_isa_in(std::initializer_list<dnnl::cpu_isa> isas) {
  const auto isa = dnnl::get_effective_cpu_isa();
  return std::find(isas.begin(), isas.end(), isa) != isas.end();
}

}  // namespace

bool cpu_supports_bf16() {
  using dnnl::cpu_isa;
  static const bool supported = effective_isa_in({cpu_isa::avx512_core_bf16, cpu_isa::avx512_core_amx});
  return supported;
}

bool cpu_supports_int8() {
  using dnnl::cpu_isa;
  static const bool supported =
      effective_isa_in({cpu_isa::avx2, cpu_isa::avx2_vnni, cpu_isa::avx512_core, cpu_isa::avx512_core_vnni,
                        cpu_isa::avx512_core_bf16, cpu_isa::avx512_core_amx});
  return supported;
}

MatmulPrecision matmul_precision() {
  return static_cast<MatmulPrecision>(t_precision >= 0 ? t_precision : default_precision().load());
}

void set_default_matmul_precision(MatmulPrecision precision) {
  check_supported(precision);
  default_precision() = static_cast<int>(precision);
}

MatmulPrecisionGuard::MatmulPrecisionGuard(MatmulPrecision precision) : previous_(t_precision) {
  check_supported(precision);
  t_precision = static_cast<int>(precision);
}

MatmulPrecisionGuard::~MatmulPrecisionGuard() { t_precision = previous_; }

namespace {

void check_gemm(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta,
                const torch::Tensor& bias) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2, "gemm: expected 2-D a, b and out, got ", a.dim(),
              "-D, ", b.dim(), "-D and ", out.dim(), "-D");
  TORCH_CHECK(a.size(1) == b.size(0), "gemm: a is ", a.sizes(), " but b is ", b.sizes(), " (inner sizes differ)");
  TORCH_CHECK(out.size(0) == a.size(0) && out.size(1) == b.size(1), "gemm: expected out [", a.size(0), ", ",
              b.size(1), "], got ", out.sizes());
  TORCH_CHECK(beta == 0 || beta == 1, "gemm: beta must be 0 or 1, got ", beta);
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == b.size(1)), "gemm: expected bias [",
              b.size(1), "], got ", bias.defined() ? bias.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(a.scalar_type() == b.scalar_type() && a.scalar_type() == out.scalar_type(),
              "gemm: a, b and out must have one dtype");
}

/// Whether oneDNN takes this product (float32 on the CPU, layouts it reads as they are).
bool onednn_takes(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b,
                  const torch::Tensor& bias) {
  const bool empty = out.numel() == 0 || a.size(1) == 0;
  return use_onednn() && !empty && a.scalar_type() == torch::kFloat && a.device().is_cpu() && plain_2d(a) &&
         plain_2d(b) && plain_2d(out) &&
         (!bias.defined() || (bias.is_contiguous() && bias.scalar_type() == torch::kFloat));
}

}  // namespace

namespace {

/// The product through LibTorch (OpenBLAS): float64, layouts oneDNN cannot
/// read, CELLSTATE_GEMM=torch.
void torch_gemm_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta,
                    const torch::Tensor& bias) {
  t_counters.last_kernel = "torch";
  torch::Tensor result = out;  // a view: addmm_out writes through it
  if (bias.defined()) {
    if (beta == 1) {
      result.add_(bias).addmm_(a, b);
    } else {
      torch::addmm_out(result, bias.unsqueeze(0).expand_as(out), a, b);
    }
  } else if (beta == 1) {
    result.addmm_(a, b);
  } else {
    torch::mm_out(result, a, b);
  }
}

}  // namespace

MatmulPrecision product_precision(const torch::Tensor& a) {
  return a.scalar_type() == torch::kFloat ? matmul_precision() : MatmulPrecision::kFloat32;
}

TensorStamp TensorStamp::of(const torch::Tensor& t) {
  if (!t.defined() || !t.has_storage()) return {};
  return {t.storage().unsafeGetStorageImpl(), t.data_ptr(), t._version()};
}

namespace {

/// float32 values rounded to bfloat16 and back: a bfloat16 product with
/// float32 sums, computed by a float32 kernel (the products of two 8-bit
/// significands are exact in float32). The reference the oneDNN kernels are
/// tested against, and the path of products they do not take.
torch::Tensor rounded_to_bf16(const torch::Tensor& t) { return to_bf16(t).to(torch::kFloat); }

/// A right operand converted for reduced-precision products: a bfloat16
/// copy, or int8 values and their per-column scales, or a bfloat16 copy in
/// oneDNN's blocked layout (PackedMatrix).
struct ConvertedOperand {
  torch::Tensor values;  // [K, N]: bfloat16 or int8, the source's strides
  torch::Tensor scale;   // [N] float32, int8 only
  dnnl::memory packed;   // blocked copy, when asked for one: over `values`' bytes (scale empty)
};

/// b [K, N] (float32, plain_2d) copied into the blocked layout oneDNN's
/// kernels read fastest for products of about `rows` rows at `operands`
/// (float32, or bfloat16: the reorder rounds to nearest even, as to_bf16).
/// The copy lives in a LibTorch tensor of bytes, so that it comes from the
/// caching allocator (util/allocator.h), as LibTorch's large tensors do:
/// a fresh allocation of a bfloat16 650 x 2600 (3.4 MB) at every training
/// step would be a fresh mmap and its page faults.
ConvertedOperand pack(const torch::Tensor& b, int64_t rows, MatmulPrecision operands) {
  auto& onednn = this_thread_gemm();
  const auto layout = onednn.packed_layout(rows, b.size(0), b.size(1), operands);
  auto bytes = torch::empty({static_cast<int64_t>(layout.get_size())}, b.options().dtype(torch::kByte));
  dnnl::memory packed(layout, onednn.engine(), bytes.data_ptr());
  dnnl::memory source(Matrix::of(b).desc(), onednn.engine(), b.data_ptr());
  dnnl::reorder(source, packed).execute(onednn.stream(), source, packed);
  onednn.stream().wait();
  return {bytes, {}, packed};
}

/// `packed_rows` > 0: b packed for products of about that many rows.
ConvertedOperand convert(const torch::Tensor& b, MatmulPrecision operands, int64_t packed_rows = 0) {
  if (packed_rows > 0) return pack(b, packed_rows, operands);
  if (operands == MatmulPrecision::kInt8) {
    auto q = quantize_symmetric_int8(b, /*dim=*/0);  // one scale per column
    return {q.q, q.scale, {}};
  }
  return {to_bf16(b), {}, {}};
}

/// This thread's converted copies of the right operands of products run
/// without autograd (inference: the same weights, product after product).
/// An entry is used while its source has the same stamp (TensorStamp),
/// shape and strides; it holds the source's storage weakly, so the address
/// cannot be reused meanwhile but the memory is freed with the tensor.
/// Entries whose source is gone (a training step's temporaries: the
/// activations its weight gradients multiply, the weights DropConnect
/// makes) are swept out as entries accumulate; without that, each step's
/// added entries until kMaxBytes, and then everything was dropped, the
/// weights too (sentiment's bf16 training slowed from 38 to 75 ms a step
/// by its fourth epoch). Everything is dropped past kMaxBytes (the weights
/// of a finished job).
class ConvertedOperands {
 public:
  static constexpr int64_t kMaxBytes = int64_t{256} << 20;
  static constexpr size_t kSweepEntries = 64;

  /// `packed_rows` > 0: the copy in the blocked layout for products of
  /// about that many rows (pack()).
  ConvertedOperand get(const torch::Tensor& b, MatmulPrecision operands, int64_t packed_rows = 0) {
    if (torch::GradMode::is_enabled() || !b.has_storage()) return convert(b, operands, packed_rows);
    const auto stamp = TensorStamp::of(b);
    const Key key{stamp.storage, stamp.data, b.size(0), b.size(1), b.stride(0), b.stride(1), packed_rows, operands};
    auto it = entries_.find(key);
    if (it != entries_.end() && !it->second.source.expired() && it->second.stamp == stamp) return it->second.copy;
    if (it != entries_.end()) drop(it);
    auto copy = convert(b, operands, packed_rows);
    if (entries_.size() >= sweep_at_) sweep();
    if (bytes_ + bytes_of(copy) > kMaxBytes) {
      entries_.clear();
      bytes_ = 0;
      sweep_at_ = kSweepEntries;
    }
    bytes_ += bytes_of(copy);
    t_counters.converted_bytes = bytes_;
    entries_.emplace(key, Entry{c10::weak_intrusive_ptr<c10::StorageImpl>(b.storage().getWeakStorageImpl()),
                                stamp, copy});
    return copy;
  }

 private:
  /// Drops the entries whose source was freed; the next sweep comes when
  /// the entries have doubled (amortised: a constant per insertion).
  void sweep() {
    for (auto i = entries_.begin(); i != entries_.end();) i = i->second.source.expired() ? drop(i) : std::next(i);
    sweep_at_ = std::max(kSweepEntries, 2 * entries_.size());
    t_counters.converted_bytes = bytes_;
  }

  static int64_t bytes_of(const ConvertedOperand& c) {
    return c.values.nbytes() + (c.scale.defined() ? c.scale.nbytes() : 0);
  }
  struct Key {
    const void* storage;
    const void* data;
    int64_t rows, cols, stride0, stride1, packed_rows;
    MatmulPrecision operands;
    bool operator==(const Key& o) const {
      return storage == o.storage && data == o.data && rows == o.rows && cols == o.cols && stride0 == o.stride0 &&
             stride1 == o.stride1 && packed_rows == o.packed_rows && operands == o.operands;
    }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      size_t h = std::hash<const void*>()(k.storage) ^ (std::hash<const void*>()(k.data) << 1);
      for (int64_t x : {k.rows, k.cols, k.stride0, k.stride1, k.packed_rows, static_cast<int64_t>(k.operands)})
        h = h * 1000003u ^ std::hash<int64_t>()(x);
      return h;
    }
  };
  struct Entry {
    c10::weak_intrusive_ptr<c10::StorageImpl> source;
    TensorStamp stamp;
    ConvertedOperand copy;
  };
  using Entries = std::unordered_map<Key, Entry, KeyHash>;
  Entries entries_;
  int64_t bytes_ = 0;
  size_t sweep_at_ = kSweepEntries;

  /// Erases an entry and its bytes; the iterator after it.
  Entries::iterator drop(Entries::iterator it) {
    bytes_ -= bytes_of(it->second.copy);
    return entries_.erase(it);
  }
};

ConvertedOperands& this_thread_converted_operands() {
  thread_local ConvertedOperands operands;
  return operands;
}

/// A bfloat16 or int8 product of few rows (a generated token's recurrence
/// and output layer: one row) reads all of b for little arithmetic, and
/// oneDNN's kernels for these types run it on one thread (1 x 420 times
/// 420 x 1680 in bf16: 22 us on one thread, 24-29 on two). With
/// more threads, each takes a slice of b's columns as a one-thread product
/// of its own (nn/concurrent.h), so every core reads its share of the
/// weight. `a` and `b` are already of the operand type. False (nothing
/// written) when the product is not of that kind or no kernel takes it.
constexpr int64_t kSplitMaxRows = 8;
constexpr int64_t kSplitMinElements = int64_t{1} << 16;  // of b

bool run_split_by_columns(const Matrix& out, const Matrix& a, const Matrix& b, MatmulPrecision operands,
                          bool accumulate, const float* bias, const float* scales) {
  const int64_t n = b.cols();
  const int64_t tasks = std::min<int64_t>(at::get_num_threads(), n / 64);
  if (a.rows() > kSplitMaxRows || b.rows() * n < kSplitMinElements || !can_run_concurrently(tasks) ||
      !this_thread_gemm().takes_any_shape(out, a, b, operands, accumulate, bias != nullptr, scales != nullptr))
    return false;
  const size_t b_bytes = dnnl::memory::data_type_size(operand_type(operands));
  run_concurrently(tasks, [&](int64_t task) {
    // Column ranges of whole 16-column groups (a cache line of float32 results).
    const int64_t begin = n * task / tasks / 16 * 16;
    const int64_t end = task + 1 == tasks ? n : n * (task + 1) / tasks / 16 * 16;
    const bool ran = this_thread_gemm().run_any_shape(
        out.columns(begin, end, sizeof(float)), a, b.columns(begin, end, b_bytes), operands, accumulate,
        bias != nullptr ? bias + begin : nullptr, scales != nullptr ? scales + begin : nullptr);
    TORCH_CHECK(ran, "gemm: no oneDNN kernel for a slice of a product whose layouts it takes");
  });
  return true;
}

/// scales[n] = b_scales[n] · a_scale in this thread's buffer, which the
/// next call overwrites (read within one product, as rows_to_bf16).
torch::Tensor output_scales(const torch::Tensor& b_scales, float a_scale) {
  const auto b = b_scales.contiguous();
  const int64_t n = b.numel();
  auto result = scratch(kScratchScales, {n}, torch::kFloat);
  const float* x = b.data_ptr<float>();
  float* y = result.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a_scale;
  return result;
}

/// The int8 product out = beta·out + a·b (+ bias) (kInt8 in nn/gemm.h),
/// where b is `qb` (int8 values, scales); without a oneDNN kernel, through
/// LibTorch from the same integers.
void int8_gemm_out(const torch::Tensor& out, const torch::Tensor& a, const ConvertedOperand& qb, double beta,
                   const torch::Tensor& bias) {
  TORCH_CHECK(!torch::GradMode::is_enabled() || !a.requires_grad(),
              "int8 products are for inference: a product that records gradients needs fp32 or bf16");
  TORCH_CHECK(a.device().is_cpu(), "int8 products run on the CPU, got operands on ", a.device());
  const auto qa = quantize_tensor(a);
  const auto scales = output_scales(qb.scale, qa.scale);
  const auto int8 = MatmulPrecision::kInt8;
  bool ran = false;
  if (use_onednn() && out.numel() > 0 && a.size(1) > 0 && plain_2d(out)) {
    const auto out_m = Matrix::of(out), a_m = Matrix::of(qa.q), b_m = Matrix::of(qb.values);
    const float* s = scales.data_ptr<float>();
    ran = run_split_by_columns(out_m, a_m, b_m, int8, beta == 1, nullptr, s) ||
          this_thread_gemm().run_any_shape(out_m, a_m, b_m, int8, beta == 1, nullptr, s);
  }
  if (!ran) {
    t_counters.last_kernel = "torch";
    // Integer sums in float32: exact while every partial sum stays below 2^24.
    const auto product = torch::mm(qa.q.to(torch::kFloat), qb.values.to(torch::kFloat)).mul_(scales);
    if (beta == 1) {
      out.add_(product);
    } else {
      out.copy_(product);
    }
  }
  if (bias.defined()) out.add_(bias);
}

/// The row count a packed layout is chosen for: `rows` rounded up to a
/// power of two, at most 1024 (a character LSTM packs for a new word count
/// on every call; the layout barely depends on it).
int64_t packed_rows(int64_t rows) {
  int64_t bucket = 1;
  while (bucket < rows && bucket < 1024) bucket *= 2;
  return bucket;
}

}  // namespace

namespace {

/// gemm_out (nn/gemm.h) after its checks; `a_bf16`, when defined, is a
/// already rounded to bfloat16 (rows_to_bf16) by a caller that tried a
/// packed product first, so that a is not rounded twice.
void checked_gemm_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta,
                      const torch::Tensor& bias, const torch::Tensor& a_bf16) {
  const auto precision = product_precision(a);
  if (precision == MatmulPrecision::kInt8) {
    int8_gemm_out(out, a, this_thread_converted_operands().get(b, precision), beta, bias);
    return;
  }
  const bool bf16 = precision == MatmulPrecision::kBFloat16;
  if (onednn_takes(out, a, b, bias)) {
    const torch::Tensor operand = bf16 ? this_thread_converted_operands().get(b, precision).values : b;
    const torch::Tensor a_operand = !bf16 ? a : a_bf16.defined() ? a_bf16 : rows_to_bf16(a);
    const auto out_m = Matrix::of(out), a_m = Matrix::of(a_operand), b_m = Matrix::of(operand);
    const float* bias_data = bias.defined() ? bias.data_ptr<float>() : nullptr;
    if (bf16 && run_split_by_columns(out_m, a_m, b_m, precision, beta == 1, bias_data, nullptr)) return;
    if (this_thread_gemm().run_any_shape(out_m, a_m, b_m, precision, beta == 1, bias_data)) return;
  }
  if (bf16) {
    torch_gemm_out(out, rounded_to_bf16(a), rounded_to_bf16(b), beta, bias);
  } else {
    torch_gemm_out(out, a, b, beta, bias);
  }
}

}  // namespace

void gemm_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta,
              const torch::Tensor& bias) {
  check_gemm(out, a, b, beta, bias);
  checked_gemm_out(out, a, b, beta, bias, {});
}

torch::Tensor gemm(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2, "gemm: expected 2-D a and b, got ", a.dim(), "-D and ", b.dim(), "-D");
  auto out = torch::empty({a.size(0), b.size(1)}, a.options());
  gemm_out(out, a, b, 0, bias);
  return out;
}

namespace {

/// y = x · wᵀ + bias for 2-D x, with its backward's products through gemm:
/// dx = dy · w, dw = dyᵀ · x, dbias = Σ_rows dy. An absent bias is passed
/// as an empty tensor (autograd functions take defined tensors).
class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w, const torch::Tensor& bias) {
    const bool has_bias = bias.numel() > 0;
    ctx->save_for_backward({x, w});
    ctx->saved_data["has_bias"] = has_bias;
    // Weights passed through StepWeights get their gradient's terms left there.
    ctx->saved_data["w_terms"] = detail::gradient_terms_of(w);
    ctx->saved_data["bias_terms"] = detail::gradient_terms_of(bias);
    return gemm(x, w.t(), has_bias ? bias : torch::Tensor());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const auto dy = grads[0].contiguous();
    const bool need_dx = ctx->needs_input_grad(0);
    const bool need_dw =
        ctx->needs_input_grad(1) && !detail::leave_gradient_term(ctx->saved_data["w_terms"], dy, x);
    // In bfloat16 dy is rounded once for both products (dx reads it by
    // rows, dw by columns).
    const bool bf16 = product_precision(dy) == MatmulPrecision::kBFloat16;
    const auto dy_bf16 = bf16 && need_dx && need_dw ? to_bf16(dy) : torch::Tensor();
    auto product = [](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& a_bf16) {
      auto out = torch::empty({a.size(0), b.size(1)}, a.options());
      check_gemm(out, a, b, 0, {});
      checked_gemm_out(out, a, b, 0, {}, a_bf16);
      return out;
    };
    torch::Tensor dx, dw, dbias;
    if (need_dx) dx = product(dy, w, dy_bf16);
    if (need_dw) dw = product(dy.t(), x, dy_bf16.defined() ? dy_bf16.t() : torch::Tensor());
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2) &&
        !detail::leave_gradient_term(ctx->saved_data["bias_terms"], dy))
      dbias = dy.sum(0);
    return {dx, dw, dbias};
  }
};

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias) {
  TORCH_CHECK(w.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.size(1), "linear: x is ", x.sizes(), " but w is ",
              w.sizes(), " (expected x [..., ", w.size(1), "])");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == w.size(0)), "linear: expected bias [",
              w.size(0), "], got ", bias.defined() ? bias.sizes() : torch::IntArrayRef{});
  const auto x2 = x.reshape({-1, x.size(-1)});
  auto sizes = x.sizes().vec();
  sizes.back() = w.size(0);
  const bool record = torch::GradMode::is_enabled() &&
                      (x.requires_grad() || w.requires_grad() || (bias.defined() && bias.requires_grad()));
  if (!record) return gemm(x2, w.t(), bias).view(sizes);
  const auto precision = product_precision(x);
  TORCH_CHECK(precision != MatmulPrecision::kInt8,
              "int8 products are for inference: a product that records gradients needs fp32 or bf16");
  const auto no_bias = torch::empty({0}, w.options());
  return LinearFunction::apply(x2, w, bias.defined() ? bias : no_bias).view(sizes);
}

torch::Tensor linear_layer(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias) {
  if (product_precision(x) == MatmulPrecision::kFloat32) return torch::nn::functional::linear(x, w, bias);
  return linear(x, w, bias);
}

int64_t packed_column_block(int64_t rows, int64_t n, int threads) {
  constexpr int64_t kWidest = 64;
  if (threads < 2 || rows > 128) return kWidest;
  auto busiest = [&](int64_t block) {  // the columns of the thread with the most blocks
    const int64_t blocks = (n + block - 1) / block;
    return (blocks + threads - 1) / threads * block;
  };
  int64_t best = kWidest;
  for (int64_t block : {48, 32}) {
    if (busiest(block) < busiest(best)) best = block;
  }
  return busiest(best) * 10 <= busiest(kWidest) * 9 ? best : kWidest;
}

/// b copied into oneDNN's blocked layout for `rows`-row products at
/// `operands` (float32 or bfloat16).
struct PackedMatrix::Packed {
  int64_t rows = 0;  // the row bucket the layout was chosen for (packed_rows)
  MatmulPrecision operands = MatmulPrecision::kFloat32;
  ConvertedOperand copy;  // its memory `packed`, over the bytes of `values`
  int build_on_use = OneDnnGemm::kBuildOnUse;  // a row count's primitive: built on its build_on_use-th product
};

PackedMatrix::PackedMatrix(const torch::Tensor& b, int64_t rows, int64_t uses) : b_(b) {
  TORCH_CHECK(b.dim() == 2, "PackedMatrix: expected a 2-D b, got ", b.dim(), "-D");
  TORCH_CHECK(rows >= 1 && uses >= 1, "PackedMatrix: rows and uses must be >= 1, got ", rows, " and ", uses);
  const auto precision = product_precision(b);
  if (rows * uses < kMinPackedRows || b.numel() < kMinPackedElements || !use_onednn() ||
      b.scalar_type() != torch::kFloat || precision == MatmulPrecision::kInt8 || !b.device().is_cpu() ||
      !plain_2d(b))
    return;
  auto packed = std::make_unique<Packed>();
  packed->rows = packed_rows(rows);
  packed->operands = precision;
  // A bfloat16 matrix of one product (an input projection: its row count is
  // the batch's token count) gains about 5% packed (9.1 -> 8.6 ms at
  // 1120 x 650 x 2600), less than a primitive costs to build (0.3-3 ms),
  // unless its row count comes back again and again: then its primitive is
  // built on the kBuildOnUseOnce-th product of that count.
  packed->build_on_use = precision == MatmulPrecision::kBFloat16 && uses == 1 ? OneDnnGemm::kBuildOnUseOnce
                                                                              : OneDnnGemm::kBuildOnUse;
  // A bfloat16 copy is kept while b is unchanged (inference: once per
  // weight and thread, as gemm_out's), a float32 one is made per matrix.
  packed->copy = precision == MatmulPrecision::kBFloat16
                     ? this_thread_converted_operands().get(b, precision, packed->rows)
                     : pack(b, packed->rows, precision);
  packed_ = std::move(packed);
}

PackedMatrix::~PackedMatrix() = default;

void PackedMatrix::gemm_out(const torch::Tensor& out, const torch::Tensor& a, double beta,
                            const torch::Tensor& bias) const {
  check_gemm(out, a, b_, beta, bias);
  // The primitives are kept per thread across PackedMatrix objects (a
  // recurrence packs per call, and each active batch size needs its own):
  // the layout is a function of (k, n, rows bucket), so the bucket stands in
  // for b's strides in their key.
  torch::Tensor a_bf16;
  if (packed_ != nullptr && product_precision(a) == packed_->operands && onednn_takes(out, a, b_, bias)) {
    if (packed_->operands == MatmulPrecision::kBFloat16) a_bf16 = rows_to_bf16(a);
    const auto& b = packed_->copy.packed;
    if (this_thread_gemm().run_packed(Matrix::of(out), Matrix::of(a_bf16.defined() ? a_bf16 : a),
                                      packed_->operands, b.get_desc(), b.get_data_handle(), packed_->rows,
                                      beta == 1, bias.defined() ? bias.data_ptr<float>() : nullptr,
                                      packed_->build_on_use))
      return;
  }
  // Not packed, a product at another precision, or a row count without its
  // primitive yet (OneDnnGemm::kBuildOnUse): b as it lies.
  checked_gemm_out(out, a, b_, beta, bias, a_bf16);
}

void PackedMatrix::gemm_out(const MatrixRows& out, const MatrixRows& a, double beta, const float* bias) const {
  const int64_t k = b_.size(0), n = b_.size(1);
  TORCH_CHECK(b_.scalar_type() == torch::kFloat, "gemm: float32 rows need a float32 b, got ", b_.scalar_type());
  TORCH_CHECK(a.rows >= 0 && a.cols == k && a.stride >= k && out.rows == a.rows && out.cols == n && out.stride >= n,
              "gemm: a is ", a.rows, " x ", a.cols, " (row stride ", a.stride, ") and out ", out.rows, " x ", out.cols,
              " (row stride ", out.stride, ") but b is ", k, " x ", n);
  TORCH_CHECK(beta == 0 || beta == 1, "gemm: beta must be 0 or 1, got ", beta);
  if (out.rows == 0) return;
  torch::Tensor a_bf16;  // a rounded for a packed product that did not run: not rounded twice
  if (packed_ != nullptr && k > 0 && matmul_precision() == packed_->operands) {
    const bool bf16 = packed_->operands == MatmulPrecision::kBFloat16;
    const Matrix a_m = bf16 ? Matrix{rows_to_bf16(a), {a.rows, k, k, 1}} : Matrix{a.data, {a.rows, k, a.stride, 1}};
    const auto& b = packed_->copy.packed;
    if (this_thread_gemm().run_packed(Matrix{out.data, {out.rows, n, out.stride, 1}}, a_m, packed_->operands,
                                      b.get_desc(), b.get_data_handle(), packed_->rows, beta == 1, bias,
                                      packed_->build_on_use))
      return;
    if (bf16) a_bf16 = torch::from_blob(a_m.data, {a.rows, k}, torch::TensorOptions().dtype(torch::kBFloat16));
  }
  // As the tensor form does then (b as it lies), on views of the same rows;
  // not through it, which would count this product's row count again.
  const auto options = torch::TensorOptions().dtype(torch::kFloat);
  checked_gemm_out(torch::from_blob(out.data, {out.rows, n}, {out.stride, 1}, options),
                   torch::from_blob(a.data, {a.rows, k}, {a.stride, 1}, options), b_, beta,
                   bias != nullptr ? torch::from_blob(const_cast<float*>(bias), {n}, options) : torch::Tensor(),
                   a_bf16);
}

}  // namespace cellstate
