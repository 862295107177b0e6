#include "cellstate/nn/gemm.h"

#include <torch/torch.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdlib>
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

/// One product's shape, layouts and epilogue: the key of a primitive.
struct GemmKey {
  int64_t m, n, k, a0, a1, b0, b1, c0, c1;
  bool bias, accumulate;
  bool operator==(const GemmKey& o) const {
    return m == o.m && n == o.n && k == o.k && a0 == o.a0 && a1 == o.a1 && b0 == o.b0 && b1 == o.b1 &&
           c0 == o.c0 && c1 == o.c1 && bias == o.bias && accumulate == o.accumulate;
  }
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& key) const {
    const int64_t v[] = {key.m, key.n, key.k, key.a0, key.a1, key.b0, key.b1, key.c0, key.c1};
    size_t h = (key.bias ? 1u : 0u) | (key.accumulate ? 2u : 0u);
    for (int64_t x : v) h = h * 1000003u ^ std::hash<int64_t>()(x);
    return h;
  }
};

dnnl::memory::desc desc_of(const torch::Tensor& t) {
  return dnnl::memory::desc({t.size(0), t.size(1)}, dnnl::memory::data_type::f32, {t.stride(0), t.stride(1)});
}

/// The engine, a stream and the primitives this thread has built. A
/// primitive is built once per shape (oneDNN's own cache would still cost a
/// descriptor per call, which shows on the small per-step products).
class OneDnnGemm {
 public:
  OneDnnGemm() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  /// out = (accumulate ? out : 0) + a · b (+ bias), where b is `b_desc` at
  /// `b_data`; `b_key` names b's layout in the cache: its two strides, or
  /// {-1, rows} for the blocked layout packed_layout(rows, ...) gave. False
  /// (nothing written) when no oneDNN kernel takes this product.
  bool run(const torch::Tensor& out, const torch::Tensor& a, const dnnl::memory::desc& b_desc, void* b_data,
           std::pair<int64_t, int64_t> b_key, bool accumulate, const torch::Tensor& bias) {
    const GemmKey key{a.size(0), out.size(1), a.size(1), a.stride(0), a.stride(1), b_key.first, b_key.second,
                      out.stride(0), out.stride(1), bias.defined(), accumulate};
    auto it = primitives_.find(key);
    if (it == primitives_.end()) {
      if (primitives_.size() >= 1024) primitives_.clear();  // shapes of a finished job
      it = primitives_.emplace(key, build(desc_of(a), b_desc, desc_of(out), bias.defined(), accumulate)).first;
    }
    if (!it->second) return false;
    using dnnl::memory;
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(desc_of(a), engine_, a.data_ptr())},
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
  dnnl::memory::desc packed_layout(int64_t rows, int64_t k, int64_t n) {
    using dnnl::memory;
    const auto f32 = memory::data_type::f32;
    const GemmKey key{rows, n, k, 0, 0, 0, 0, 0, 0, false, false};
    auto it = layouts_.find(key);
    if (it == layouts_.end()) {
      if (layouts_.size() >= 256) layouts_.clear();
      const dnnl::matmul::primitive_desc probe(
          dnnl::matmul::desc(memory::desc({rows, k}, f32, memory::format_tag::ab),
                             memory::desc({k, n}, f32, memory::format_tag::any),
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

void gemm_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta,
              const torch::Tensor& bias) {
  check_gemm(out, a, b, beta, bias);
  if (onednn_takes(out, a, b, bias) &&
      this_thread_gemm().run(out, a, desc_of(b), b.data_ptr(), {b.stride(0), b.stride(1)}, beta == 1, bias))
    return;
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

torch::Tensor gemm(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2, "gemm: expected 2-D a and b, got ", a.dim(), "-D and ", b.dim(), "-D");
  auto out = torch::empty({a.size(0), b.size(1)}, a.options());
  gemm_out(out, a, b, 0, bias);
  return out;
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias) {
  TORCH_CHECK(w.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.size(1), "linear: x is ", x.sizes(), " but w is ",
              w.sizes(), " (expected x [..., ", w.size(1), "])");
  // gemm() records no autograd graph: a product that training differentiates goes through LibTorch.
  if (torch::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad() || (bias.defined() && bias.requires_grad())))
    return torch::nn::functional::linear(x, w, bias);
  const auto x2 = x.reshape({-1, x.size(-1)});
  auto out = gemm(x2, w.t(), bias);
  auto sizes = x.sizes().vec();
  sizes.back() = w.size(0);
  return out.view(sizes);
}

/// b copied into oneDNN's blocked layout for `rows`-row products.
struct PackedMatrix::Packed {
  int64_t rows = 0;
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
  packed->b = dnnl::memory(onednn.packed_layout(rows, b.size(0), b.size(1)), onednn.engine());
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
  if (packed_ != nullptr && onednn_takes(out, a, b_, bias) &&
      this_thread_gemm().run(out, a, packed_->b.get_desc(), packed_->b.get_data_handle(), {-1, packed_->rows},
                             beta == 1, bias))
    return;
  cellstate::gemm_out(out, a, b_, beta, bias);
}

}  // namespace cellstate
