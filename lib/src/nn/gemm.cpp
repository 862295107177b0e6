#include "cellstate/nn/gemm.h"

#include <torch/torch.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdlib>
#include <unordered_map>
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

/// The engine, a stream and the primitives this thread has built. A
/// primitive is built once per shape (oneDNN's own cache would still cost a
/// descriptor per call, which shows on the small per-step products).
class OneDnnGemm {
 public:
  OneDnnGemm() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  /// Every primitive of this thread runs on this engine and stream (one
  /// built for another engine cannot run on this stream).
  const dnnl::engine& engine() const { return engine_; }
  dnnl::stream& stream() { return stream_; }

  void run(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, bool accumulate,
           const torch::Tensor& bias) {
    const GemmKey key{a.size(0), b.size(1), a.size(1), a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                  out.stride(0), out.stride(1), bias.defined(), accumulate};
    auto it = primitives_.find(key);
    if (it == primitives_.end()) {
      if (primitives_.size() >= 512) primitives_.clear();  // shapes of a finished job
      it = primitives_.emplace(key, build(key)).first;
    }
    using dnnl::memory;
    const auto& p = it->second;
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(p.a, engine_, a.data_ptr())},
        {DNNL_ARG_WEIGHTS, memory(p.b, engine_, b.data_ptr())},
        {DNNL_ARG_DST, memory(p.c, engine_, out.data_ptr())}};
    if (bias.defined()) args.emplace(DNNL_ARG_BIAS, memory(p.bias, engine_, bias.data_ptr()));
    p.primitive.execute(stream_, args);
    stream_.wait();
  }

 private:
  struct Built {
    dnnl::memory::desc a, b, c, bias;
    dnnl::matmul primitive;
  };

  Built build(const GemmKey& key) {
    using dnnl::memory;
    const auto f32 = memory::data_type::f32;
    Built p;
    p.a = memory::desc({key.m, key.k}, f32, {key.a0, key.a1});
    p.b = memory::desc({key.k, key.n}, f32, {key.b0, key.b1});
    p.c = memory::desc({key.m, key.n}, f32, {key.c0, key.c1});
    dnnl::primitive_attr attr;
    if (key.accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    if (key.bias) {
      p.bias = memory::desc({1, key.n}, f32, memory::format_tag::ab);
      p.primitive = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(p.a, p.b, p.bias, p.c), attr, engine_));
    } else {
      p.primitive = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(p.a, p.b, p.c), attr, engine_));
    }
    return p;
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::unordered_map<GemmKey, Built, GemmKeyHash> primitives_;
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
  if (onednn_takes(out, a, b, bias)) {
    this_thread_gemm().run(out, a, b, beta == 1, bias);
    return;
  }
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

/// b in oneDNN's blocked layout, and a primitive per (rows of a, layouts,
/// epilogue) that reads it.
struct PackedMatrix::Packed {
  dnnl::engine engine = this_thread_gemm().engine();
  dnnl::stream& stream = this_thread_gemm().stream();
  int64_t rows = 0;           // the row count the layout was chosen for
  dnnl::memory::desc b_desc;  // the blocked layout
  dnnl::memory b;             // b copied into it

  /// The primitive for a [m, k] (strides a0, a1) · packed b into out (c0,
  /// c1). Kept per thread across PackedMatrix objects (a recurrence builds
  /// one per call, and every active batch size of a variable-length batch
  /// needs its own primitive): the layout is a function of (k, n, rows), so
  /// the key holds rows in place of b's strides. Empty where no kernel reads
  /// this layout for this shape.
  dnnl::matmul primitive(int64_t m, int64_t n, int64_t k, const torch::Tensor& a, const torch::Tensor& out, bool bias,
                         bool accumulate) {
    thread_local std::unordered_map<GemmKey, dnnl::matmul, GemmKeyHash> cache;
    const GemmKey key{m, n, k, a.stride(0), a.stride(1), -1, rows, out.stride(0), out.stride(1), bias, accumulate};
    const auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    if (cache.size() >= 1024) cache.clear();
    using dnnl::memory;
    const auto f32 = memory::data_type::f32;
    const memory::desc a_md({m, k}, f32, {a.stride(0), a.stride(1)}), c_md({m, n}, f32, {out.stride(0), out.stride(1)});
    dnnl::primitive_attr attr;
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    dnnl::matmul p;
    try {
      const auto desc = bias ? dnnl::matmul::desc(a_md, b_desc, memory::desc({1, n}, f32, memory::format_tag::ab), c_md)
                             : dnnl::matmul::desc(a_md, b_desc, c_md);
      p = dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, engine));
    } catch (const dnnl::error&) {
    }
    cache.emplace(key, p);
    return p;
  }
};

PackedMatrix::PackedMatrix(const torch::Tensor& b, int64_t rows, int64_t uses) : b_(b) {
  TORCH_CHECK(b.dim() == 2, "PackedMatrix: expected a 2-D b, got ", b.dim(), "-D");
  TORCH_CHECK(rows >= 1 && uses >= 1, "PackedMatrix: rows and uses must be >= 1, got ", rows, " and ", uses);
  if (rows * uses < kMinPackedRows || !use_onednn() || b.scalar_type() != torch::kFloat || !b.device().is_cpu() || !plain_2d(b) || b.numel() == 0)
    return;
  using dnnl::memory;
  const auto f32 = memory::data_type::f32;
  const int64_t k = b.size(0), n = b.size(1);
  auto packed = std::make_unique<Packed>();
  // The layout oneDNN picks for `rows` x k times k x n (asked once per
  // shape and thread: a descriptor costs milliseconds, a recurrence packs
  // its weight on every call).
  thread_local std::unordered_map<GemmKey, memory::desc, GemmKeyHash> layouts;
  const GemmKey layout_key{rows, n, k, 0, 0, 0, 0, 0, 0, false, false};
  auto layout = layouts.find(layout_key);
  if (layout == layouts.end()) {
    if (layouts.size() >= 256) layouts.clear();
    const dnnl::matmul::primitive_desc probe(
        dnnl::matmul::desc(memory::desc({rows, k}, f32, memory::format_tag::ab),
                           memory::desc({k, n}, f32, memory::format_tag::any),
                           memory::desc({rows, n}, f32, memory::format_tag::ab)),
        packed->engine);
    layout = layouts.emplace(layout_key, probe.weights_desc()).first;
  }
  packed->rows = rows;
  packed->b_desc = layout->second;
  packed->b = memory(packed->b_desc, packed->engine);
  memory source(memory::desc({k, n}, f32, {b.stride(0), b.stride(1)}), packed->engine, b.data_ptr());
  dnnl::reorder(source, packed->b).execute(packed->stream, source, packed->b);
  packed->stream.wait();
  packed_ = std::move(packed);
}

PackedMatrix::~PackedMatrix() = default;

void PackedMatrix::gemm_out(const torch::Tensor& out, const torch::Tensor& a, double beta,
                            const torch::Tensor& bias) const {
  check_gemm(out, a, b_, beta, bias);
  if (packed_ == nullptr || !onednn_takes(out, a, b_, bias)) {
    cellstate::gemm_out(out, a, b_, beta, bias);
    return;
  }
  const auto p = packed_->primitive(a.size(0), b_.size(1), b_.size(0), a, out, bias.defined(), beta == 1);
  if (!p) {
    cellstate::gemm_out(out, a, b_, beta, bias);
    return;
  }
  using dnnl::memory;
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(memory::desc({a.size(0), a.size(1)}, memory::data_type::f32, {a.stride(0), a.stride(1)}),
                            packed_->engine, a.data_ptr())},
      {DNNL_ARG_WEIGHTS, packed_->b},
      {DNNL_ARG_DST, memory(memory::desc({out.size(0), out.size(1)}, memory::data_type::f32,
                                         {out.stride(0), out.stride(1)}),
                            packed_->engine, out.data_ptr())}};
  if (bias.defined())
    args.emplace(DNNL_ARG_BIAS, memory(memory::desc({1, b_.size(1)}, memory::data_type::f32, memory::format_tag::ab),
                                       packed_->engine, bias.data_ptr()));
  p.execute(packed_->stream, args);
  packed_->stream.wait();
}

}  // namespace cellstate
