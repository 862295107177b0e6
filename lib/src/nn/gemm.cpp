#include "cellstate/nn/gemm.h"

#include <torch/torch.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <atomic>
#include <cstdlib>
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

/// A 2-D view oneDNN can read as it is: one unit stride, no zero strides.
bool plain_2d(const torch::Tensor& t) {
  return t.dim() == 2 && t.stride(0) > 0 && t.stride(1) > 0 && (t.stride(0) == 1 || t.stride(1) == 1);
}

/// One product's shape, layouts, operand type and epilogue: the key of a primitive.
struct GemmKey {
  int64_t m, n, k, a0, a1, b0, b1, c0, c1;
  bool bias, accumulate, bf16;
  bool operator==(const GemmKey& o) const {
    return m == o.m && n == o.n && k == o.k && a0 == o.a0 && a1 == o.a1 && b0 == o.b0 && b1 == o.b1 &&
           c0 == o.c0 && c1 == o.c1 && bias == o.bias && accumulate == o.accumulate && bf16 == o.bf16;
  }
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& key) const {
    const int64_t v[] = {key.m, key.n, key.k, key.a0, key.a1, key.b0, key.b1, key.c0, key.c1};
    size_t h = (key.bias ? 1u : 0u) | (key.accumulate ? 2u : 0u) | (key.bf16 ? 4u : 0u);
    for (int64_t x : v) h = h * 1000003u ^ std::hash<int64_t>()(x);
    return h;
  }
};

dnnl::memory::data_type operand_type(bool bf16) {
  return bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

dnnl::memory::desc desc_of(const torch::Tensor& t, bool bf16 = false) {
  return dnnl::memory::desc({t.size(0), t.size(1)}, operand_type(bf16), {t.stride(0), t.stride(1)});
}

/// The operands of a bfloat16 product, float32 values rounded to nearest
/// even. Strides are kept (b.t() stays a transposed view of a dense copy).
torch::Tensor to_bf16(const torch::Tensor& t) { return t.to(torch::kBFloat16); }

/// The engine, a stream and the primitives this thread has built. A
/// primitive is built once per shape (oneDNN's own cache would still cost a
/// descriptor per call, which shows on the small per-step products).
class OneDnnGemm {
 public:
  OneDnnGemm() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  /// out = (accumulate ? out : 0) + a · b (+ bias), where b is `b_desc` at
  /// `b_data`; `b_key` names b's layout in the cache: its two strides, or
  /// {-1, rows} for the blocked layout packed_layout(rows, ...) gave. With
  /// `bf16`, b is bfloat16 and a float32 a is rounded to bfloat16 here. False
  /// (nothing written) when no oneDNN kernel takes this product.
  bool run(const torch::Tensor& out, const torch::Tensor& a_in, const dnnl::memory::desc& b_desc, void* b_data,
           std::pair<int64_t, int64_t> b_key, bool accumulate, const torch::Tensor& bias, bool bf16) {
    const torch::Tensor a = bf16 ? to_bf16(a_in) : a_in;
    const GemmKey key{a.size(0),    out.size(1),     a.size(1),      a.stride(0),    a.stride(1),
                      b_key.first,  b_key.second,    out.stride(0),  out.stride(1),  bias.defined(),
                      accumulate,   bf16};
    auto it = primitives_.find(key);
    if (it == primitives_.end()) {
      if (primitives_.size() >= 1024) primitives_.clear();  // shapes of a finished job
      it = primitives_.emplace(key, build(desc_of(a, bf16), b_desc, desc_of(out), bias.defined(), accumulate)).first;
    }
    if (!it->second) return false;
    using dnnl::memory;
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(desc_of(a, bf16), engine_, a.data_ptr())},
                                         {DNNL_ARG_WEIGHTS, memory(b_desc, engine_, b_data)},
                                         {DNNL_ARG_DST, memory(desc_of(out), engine_, out.data_ptr())}};
    if (bias.defined()) args.emplace(DNNL_ARG_BIAS, memory(bias_desc(out.size(1)), engine_, bias.data_ptr()));
    it->second.execute(stream_, args);
    stream_.wait();
    return true;
  }

  /// The blocked layout oneDNN picks for k x n when a has `rows` rows
  /// (asked once per shape: a descriptor costs milliseconds, and a
  /// recurrence packs its weight on every call).
  dnnl::memory::desc packed_layout(int64_t rows, int64_t k, int64_t n, bool bf16) {
    using dnnl::memory;
    const auto f32 = memory::data_type::f32, operand = operand_type(bf16);
    const GemmKey key{rows, n, k, 0, 0, 0, 0, 0, 0, false, false, bf16};
    auto it = layouts_.find(key);
    if (it == layouts_.end()) {
      if (layouts_.size() >= 256) layouts_.clear();
      const dnnl::matmul::primitive_desc probe(
          dnnl::matmul::desc(memory::desc({rows, k}, operand, memory::format_tag::ab),
                             memory::desc({k, n}, operand, memory::format_tag::any),
                             memory::desc({rows, n}, f32, memory::format_tag::ab)),
          engine_);
      it = layouts_.emplace(key, probe.weights_desc()).first;
    }
    return it->second;
  }

  const dnnl::engine& engine() const { return engine_; }
  dnnl::stream& stream() { return stream_; }

 private:
  static dnnl::memory::desc bias_desc(int64_t n) {
    return dnnl::memory::desc({1, n}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
  }

  /// Empty where no kernel reads these layouts.
  dnnl::matmul build(const dnnl::memory::desc& a, const dnnl::memory::desc& b, const dnnl::memory::desc& c,
                     bool bias, bool accumulate) {
    dnnl::primitive_attr attr;
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    try {
      const auto desc = bias ? dnnl::matmul::desc(a, b, bias_desc(c.dims()[1]), c) : dnnl::matmul::desc(a, b, c);
      return dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, engine_));
    } catch (const dnnl::error&) {
      return {};
    }
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::unordered_map<GemmKey, dnnl::matmul, GemmKeyHash> primitives_;
  std::unordered_map<GemmKey, dnnl::memory::desc, GemmKeyHash> layouts_;
};

OneDnnGemm& this_thread_gemm() {
  thread_local OneDnnGemm gemm;
  return gemm;
}

}  // namespace

std::string gemm_backend() { return use_onednn() ? "onednn" : "torch"; }

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

void check_supported(MatmulPrecision precision) {
  TORCH_CHECK(precision != MatmulPrecision::kBFloat16 || cpu_supports_bf16(),
              "bf16 precision needs a CPU with AVX512_BF16 (or AMX); this one has neither "
              "(oneDNN's effective ISA: ", static_cast<int>(dnnl::get_effective_cpu_isa()), ")");
}

}  // namespace

std::string to_string(MatmulPrecision precision) {
  return precision == MatmulPrecision::kBFloat16 ? "bf16" : "fp32";
}

MatmulPrecision parse_matmul_precision(const std::string& name) {
  if (name == "fp32") return MatmulPrecision::kFloat32;
  if (name == "bf16") return MatmulPrecision::kBFloat16;
  throw std::invalid_argument("precision must be fp32 or bf16, got '" + name + "'");
}

bool cpu_supports_bf16() {
  static const bool supported = [] {
    using dnnl::cpu_isa;
    switch (dnnl::get_effective_cpu_isa()) {
      case cpu_isa::avx512_core_bf16:
      case cpu_isa::avx512_core_amx:
        return true;
      default:
        return false;
    }
  }();
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

/// Whether this float32 product is computed in bfloat16.
bool bf16_product(const torch::Tensor& a) {
  return a.scalar_type() == torch::kFloat && matmul_precision() == MatmulPrecision::kBFloat16;
}

/// float32 values rounded to bfloat16 and back: a bfloat16 product with
/// float32 sums, computed by a float32 kernel (the products of two 8-bit
/// significands are exact in float32). The reference the oneDNN kernels are
/// tested against, and the path of products they do not take.
torch::Tensor rounded_to_bf16(const torch::Tensor& t) { return to_bf16(t).to(torch::kFloat); }

/// This thread's bfloat16 copies of the right operands of products run
/// without autograd (inference: the same weights, product after product).
/// An entry is used while its source is the same storage, at the same
/// version, shape and strides; it holds the source's storage weakly, so the
/// address cannot be reused meanwhile but the memory is freed with the
/// tensor. Everything is dropped past kMaxBytes (the weights of a finished job).
class Bf16Operands {
 public:
  static constexpr int64_t kMaxBytes = int64_t{256} << 20;

  torch::Tensor get(const torch::Tensor& b) {
    if (torch::GradMode::is_enabled() || !b.has_storage()) return to_bf16(b);
    const Key key{b.storage().unsafeGetStorageImpl(), b.data_ptr(), b.size(0), b.size(1), b.stride(0), b.stride(1)};
    auto it = entries_.find(key);
    if (it != entries_.end() && !it->second.source.expired() && it->second.version == b._version())
      return it->second.copy;
    if (it != entries_.end()) {
      bytes_ -= it->second.copy.numel() * 2;
      entries_.erase(it);
    }
    auto copy = to_bf16(b);
    if (bytes_ + copy.numel() * 2 > kMaxBytes) {
      entries_.clear();
      bytes_ = 0;
    }
    bytes_ += copy.numel() * 2;
    entries_.emplace(key, Entry{c10::weak_intrusive_ptr<c10::StorageImpl>(b.storage().getWeakStorageImpl()),
                                b._version(), copy});
    return copy;
  }

 private:
  struct Key {
    const void* storage;
    const void* data;
    int64_t rows, cols, stride0, stride1;
    bool operator==(const Key& o) const {
      return storage == o.storage && data == o.data && rows == o.rows && cols == o.cols && stride0 == o.stride0 &&
             stride1 == o.stride1;
    }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      size_t h = std::hash<const void*>()(k.storage) ^ (std::hash<const void*>()(k.data) << 1);
      for (int64_t x : {k.rows, k.cols, k.stride0, k.stride1}) h = h * 1000003u ^ std::hash<int64_t>()(x);
      return h;
    }
  };
  struct Entry {
    c10::weak_intrusive_ptr<c10::StorageImpl> source;
    int64_t version;
    torch::Tensor copy;
  };
  std::unordered_map<Key, Entry, KeyHash> entries_;
  int64_t bytes_ = 0;
};

Bf16Operands& this_thread_bf16_operands() {
  thread_local Bf16Operands operands;
  return operands;
}

}  // namespace

void gemm_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta,
              const torch::Tensor& bias) {
  check_gemm(out, a, b, beta, bias);
  const bool bf16 = bf16_product(a);
  if (onednn_takes(out, a, b, bias)) {
    const torch::Tensor operand = bf16 ? this_thread_bf16_operands().get(b) : b;
    if (this_thread_gemm().run(out, a, desc_of(operand, bf16), operand.data_ptr(),
                               {operand.stride(0), operand.stride(1)}, beta == 1, bias, bf16))
      return;
  }
  if (bf16) {
    torch_gemm_out(out, rounded_to_bf16(a), rounded_to_bf16(b), beta, bias);
  } else {
    torch_gemm_out(out, a, b, beta, bias);
  }
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
    return gemm(x, w.t(), has_bias ? bias : torch::Tensor());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const auto dy = grads[0].contiguous();
    torch::Tensor dx, dw, dbias;
    if (ctx->needs_input_grad(0)) dx = gemm(dy, w);
    if (ctx->needs_input_grad(1)) dw = gemm(dy.t(), x);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) dbias = dy.sum(0);
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
  // float32 training keeps LibTorch's linear (its results, bit for bit, as
  // before there was a bf16 path); bf16 training needs the products here.
  if (!bf16_product(x)) return torch::nn::functional::linear(x, w, bias);
  const auto no_bias = torch::empty({0}, w.options());
  return LinearFunction::apply(x2, w, bias.defined() ? bias : no_bias).view(sizes);
}

torch::Tensor linear_layer(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias) {
  if (!bf16_product(x)) return torch::nn::functional::linear(x, w, bias);
  return linear(x, w, bias);
}

/// b copied into oneDNN's blocked layout for `rows`-row products, as
/// bfloat16 values when it was packed for bfloat16 products.
struct PackedMatrix::Packed {
  int64_t rows = 0;
  bool bf16 = false;
  dnnl::memory b;
};

PackedMatrix::PackedMatrix(const torch::Tensor& b, int64_t rows, int64_t uses) : b_(b) {
  TORCH_CHECK(b.dim() == 2, "PackedMatrix: expected a 2-D b, got ", b.dim(), "-D");
  TORCH_CHECK(rows >= 1 && uses >= 1, "PackedMatrix: rows and uses must be >= 1, got ", rows, " and ", uses);
  if (rows * uses < kMinPackedRows || !use_onednn() || b.scalar_type() != torch::kFloat || !b.device().is_cpu() ||
      !plain_2d(b) || b.numel() == 0)
    return;
  auto& onednn = this_thread_gemm();
  auto packed = std::make_unique<Packed>();
  packed->rows = rows;
  packed->bf16 = bf16_product(b);
  packed->b = dnnl::memory(onednn.packed_layout(rows, b.size(0), b.size(1), packed->bf16), onednn.engine());
  dnnl::memory source(desc_of(b), onednn.engine(), b.data_ptr());
  dnnl::reorder(source, packed->b).execute(onednn.stream(), source, packed->b);
  onednn.stream().wait();
  packed_ = std::move(packed);
}

PackedMatrix::~PackedMatrix() = default;

void PackedMatrix::gemm_out(const torch::Tensor& out, const torch::Tensor& a, double beta,
                            const torch::Tensor& bias) const {
  check_gemm(out, a, b_, beta, bias);
  // Kept per thread across PackedMatrix objects (a recurrence packs per
  // call, and each active batch size needs its own primitive): the layout is
  // a function of (k, n, rows), so rows stands in for b's strides in the key.
  if (packed_ != nullptr && packed_->bf16 == bf16_product(a) && onednn_takes(out, a, b_, bias) &&
      this_thread_gemm().run(out, a, packed_->b.get_desc(), packed_->b.get_data_handle(), {-1, packed_->rows},
                             beta == 1, bias, packed_->bf16))
    return;
  cellstate::gemm_out(out, a, b_, beta, bias);
}

}  // namespace cellstate
