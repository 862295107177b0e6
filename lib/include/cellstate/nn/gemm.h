#pragma once
// Matrix products of the recurrent kernels and the large linear layers, at
// this CPU's rate: float32 products go through oneDNN's matmul primitive
// (brgemm kernels on AVX-512: about 2x OpenBLAS's sgemm at the LSTM's
// sizes), other types and unusual layouts through LibTorch (OpenBLAS).
//
//   out[M, N] = beta · out + a[M, K] · b[K, N] (+ bias[N] on every row)
//
// a, b and out are 2-D views with any strides in which one dimension is
// unit-stride (so w.t() and x.t() are taken as they are, without a copy).
// The backend is chosen once per process by CELLSTATE_GEMM: "onednn" (the
// default) or "torch" (every product through LibTorch; for comparisons).

#include <torch/types.h>

#include <memory>
#include <string>

namespace cellstate {

/// Arithmetic of float32 products. kBFloat16: both operands rounded to
/// bfloat16 (to nearest even), their products summed in float32, the result
/// float32 — oneDNN's AVX512_BF16 kernels, about twice the float32 rate.
/// Everything around the products (gate nonlinearities, states, losses,
/// optimisers, the weights themselves) stays float32.
enum class MatmulPrecision { kFloat32, kBFloat16 };

/// "fp32" / "bf16", and back (std::invalid_argument naming the accepted values).
std::string to_string(MatmulPrecision precision);
MatmulPrecision parse_matmul_precision(const std::string& name);

/// Whether this CPU runs bfloat16 products natively (AVX512_BF16 or AMX, as
/// oneDNN detects it; DNNL_MAX_CPU_ISA can lower it). Without it oneDNN
/// would emulate them, slower than float32, so kBFloat16 is refused.
bool cpu_supports_bf16();

/// The precision of the float32 products this thread computes: its
/// innermost MatmulPrecisionGuard's, else the process default.
MatmulPrecision matmul_precision();

/// The precision of threads without a guard (kFloat32 at start). Refuses
/// kBFloat16 where the CPU lacks it (TORCH_CHECK).
void set_default_matmul_precision(MatmulPrecision precision);

/// Sets this thread's product precision for the guard's lifetime, then
/// restores the previous one. Refuses kBFloat16 where the CPU lacks it.
class MatmulPrecisionGuard {
 public:
  explicit MatmulPrecisionGuard(MatmulPrecision precision);
  ~MatmulPrecisionGuard();
  MatmulPrecisionGuard(const MatmulPrecisionGuard&) = delete;
  MatmulPrecisionGuard& operator=(const MatmulPrecisionGuard&) = delete;

 private:
  int previous_;  // the thread's setting before: -1 for none (the default applies)
};

/// out = beta * out + a · b (+ bias). `beta` is 0 (out is only written) or
/// 1 (accumulate). Shapes and dtypes are checked (TORCH_CHECK).
void gemm_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta = 0,
              const torch::Tensor& bias = {});

/// a · b (+ bias) into a new [M, N] tensor.
torch::Tensor gemm(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias = {});

/// x · wᵀ + bias over the last dimension of x (any leading dimensions), as
/// torch::nn::functional::linear computes it. Under autograd, float32
/// products go through torch::nn::functional::linear; bf16 products through
/// an autograd function whose backward's products (dx = dy · w,
/// dw = dyᵀ · x) are gemm calls at the precision of the thread running it.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias = {});

/// x · wᵀ + bias for the apps' small and mid-sized layers (classifier and
/// tagger heads, attention, bridges, the seq2seq decoder's cells): in
/// float32 exactly LibTorch's linear, training and inference alike (the
/// results these layers always had, bit for bit); in bfloat16 the products
/// of linear() above.
torch::Tensor linear_layer(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias = {});

/// "onednn" or "torch": what float32 products use in this process.
std::string gemm_backend();

/// The right operand b [K, N] of many products a · b (a recurrence's W_hhᵀ
/// at every time step), copied once into the blocked layout oneDNN's
/// kernels read fastest: at the per-step sizes (32 x 650 times 650 x 2600)
/// that runs at 1.6x the rate of reading b as it lies. It is a snapshot:
/// build it after the last change to b. Without oneDNN (float64, or
/// CELLSTATE_GEMM=torch) it holds b and calls gemm_out.
class PackedMatrix {
 public:
  /// `rows`: the usual row count of a (picks the layout; other counts
  /// work); `uses`: how many products will read it. Copying b costs about
  /// what a product of a few hundred rows gains, so b is packed only when
  /// rows x uses reaches kMinPackedRows (a 7-token prompt reads W_hh as it lies).
  PackedMatrix(const torch::Tensor& b, int64_t rows, int64_t uses = 1);
  static constexpr int64_t kMinPackedRows = 256;
  ~PackedMatrix();
  PackedMatrix(const PackedMatrix&) = delete;
  PackedMatrix& operator=(const PackedMatrix&) = delete;

  /// out = beta * out + a · b (+ bias), as gemm_out. b is packed at the
  /// precision current when the matrix was built (bfloat16 copies for
  /// kBFloat16); a product at another precision reads b as it lies.
  void gemm_out(const torch::Tensor& out, const torch::Tensor& a, double beta = 0,
                const torch::Tensor& bias = {}) const;

 private:
  struct Packed;
  torch::Tensor b_;
  std::unique_ptr<Packed> packed_;  // null: products go through gemm_out
};

}  // namespace cellstate
