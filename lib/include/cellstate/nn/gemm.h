#pragma once
// Matrix products of the recurrent kernels and the large linear layers, at
// this CPU's rate: float32 products go through oneDNN's matmul primitive
// (about 2x OpenBLAS's sgemm at the LSTM's sizes; one primitive whose sizes
// are given at run time serves every shape of a layout, and a packed right
// operand gets brgemm primitives for the row counts that recur), other types
// and unusual layouts through LibTorch (OpenBLAS).
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

/// Arithmetic of float32 products.
///
/// kBFloat16: both operands rounded to bfloat16 (to nearest even), their
/// products summed in float32, the result float32 — oneDNN's AVX512_BF16
/// kernels, about twice the float32 rate.
///
/// kInt8: dynamic quantization, for inference only. The right operand b
/// [K, N] (the weights) is rounded to int8 per column, symmetrically:
///   s_b[n] = max_k |b[k, n]| / 127 (1 for a zero column),
///   q_b[k, n] = round(b[k, n] / s_b[n]);
/// the left operand a [M, K] (the activations) likewise per call, one
/// scale for the whole tensor: s_a = max |a| / 127, q_a = round(a / s_a);
/// then out[m, n] = s_a · s_b[n] · Σ_k q_a[m, k] q_b[k, n], the sums exact in
/// int32 (oneDNN's VNNI kernels). A product that records gradients is
/// refused: train in fp32 or bf16.
///
/// Everything around the products (gate nonlinearities, states, losses,
/// optimisers, the weights themselves) stays float32.
enum class MatmulPrecision { kFloat32, kBFloat16, kInt8 };

/// "fp32" / "bf16" / "int8", and back (std::invalid_argument naming the accepted values).
std::string to_string(MatmulPrecision precision);
MatmulPrecision parse_matmul_precision(const std::string& name);

/// Whether this CPU runs bfloat16 products natively (AVX512_BF16 or AMX, as
/// oneDNN detects it; DNNL_MAX_CPU_ISA can lower it). Without it oneDNN
/// would emulate them, slower than float32, so kBFloat16 is refused.
bool cpu_supports_bf16();

/// Whether oneDNN has int8 kernels for this CPU (x86-64 with AVX2 or
/// AVX-512; VNNI makes them about twice as fast). Without them kInt8 is
/// refused: LibTorch would compute the integer products in float32, slower
/// than float32 products.
bool cpu_supports_int8();

/// Throws std::invalid_argument when this CPU cannot run `precision` (the
/// message names the missing instructions); the one wording of that check.
void check_cpu_supports(MatmulPrecision precision);

/// The precision of the float32 products this thread computes: its
/// innermost MatmulPrecisionGuard's, else the process default.
MatmulPrecision matmul_precision();

/// The precision of threads without a guard (kFloat32 at start). Refuses a
/// precision the CPU lacks (check_cpu_supports).
void set_default_matmul_precision(MatmulPrecision precision);

/// Sets this thread's product precision for the guard's lifetime, then
/// restores the previous one. Refuses a precision the CPU lacks.
class MatmulPrecisionGuard {
 public:
  explicit MatmulPrecisionGuard(MatmulPrecision precision);
  ~MatmulPrecisionGuard();
  MatmulPrecisionGuard(const MatmulPrecisionGuard&) = delete;
  MatmulPrecisionGuard& operator=(const MatmulPrecisionGuard&) = delete;

 private:
  int previous_;  // the thread's setting before: -1 for none (the default applies)
};

/// The precision of the product a · b on this thread: matmul_precision()
/// when a is float32, else kFloat32 (float64 products are always exact
/// LibTorch ones).
MatmulPrecision product_precision(const torch::Tensor& a);

/// What identifies a tensor's values without reading them: its storage,
/// where its data begins, and its version counter (every in-place change
/// bumps it). Two stamps of tensors alive at once are equal only when they
/// hold the same values; caches of values derived from weights compare them.
struct TensorStamp {
  const void* storage = nullptr;
  const void* data = nullptr;
  int64_t version = 0;
  /// All null for an undefined tensor.
  static TensorStamp of(const torch::Tensor& t);
  bool operator==(const TensorStamp& other) const {
    return storage == other.storage && data == other.data && version == other.version;
  }
  bool operator!=(const TensorStamp& other) const { return !(*this == other); }
};

/// out = beta * out + a · b (+ bias). `beta` is 0 (out is only written) or
/// 1 (accumulate). Shapes and dtypes are checked (TORCH_CHECK).
void gemm_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta = 0,
              const torch::Tensor& bias = {});

/// a · b (+ bias) into a new [M, N] tensor.
torch::Tensor gemm(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias = {});

/// x · wᵀ + bias over the last dimension of x (any leading dimensions), as
/// torch::nn::functional::linear computes it, for the large layers (the
/// language model's and the seq2seq's output layers, attention). Under
/// autograd through an autograd function whose backward's products
/// (dx = dy · w, dw = dyᵀ · x) are gemm calls at the precision of the thread
/// running it (float32 products through oneDNN: about twice OpenBLAS's rate
/// at an 8000-word output layer's sizes). Under kInt8 a product that records
/// gradients is an error.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias = {});

/// x · wᵀ + bias for the apps' small and mid-sized layers (classifier and
/// tagger heads and attention, the seq2seq bridges, the cells' autograd
/// steps; the seq2seq attention, combination and output layers use linear()): in
/// float32 exactly LibTorch's linear, training and inference alike (the
/// results these layers always had, bit for bit); in bfloat16 the products
/// of linear() above.
torch::Tensor linear_layer(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias = {});

/// "onednn" or "torch": what float32 products use in this process.
std::string gemm_backend();

/// What this thread's products have done so far (for tests and benchmarks).
struct GemmCounters {
  int64_t primitives_built = 0;  // oneDNN primitives built (each costs 0.02-3 ms)
  /// The last product's kernel: oneDNN's name for it ("gemm:jit",
  /// "brg:avx512_core", ...) or "torch"; empty before the first product.
  const char* last_kernel = "";
  /// Bytes of the bfloat16 and int8 copies of right operands this thread
  /// keeps for products without autograd (weights, converted once).
  int64_t converted_bytes = 0;
};
GemmCounters gemm_counters();

/// Rows of a float32 matrix in memory its caller owns: `rows` x `cols`, row
/// i at data + i * stride (stride >= cols). A recurrence addresses its
/// per-step operands so (PackedMatrix::gemm_out below) rather than as
/// tensor views: a view costs about a microsecond through LibTorch's
/// dispatcher, and a step of a small layer (NER's 16 x 200 x 800 in
/// bfloat16: about 20 us) made five of them.
struct MatrixRows {
  float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;
};

/// The width of the column blocks (64, 48 or 32) of a PackedMatrix b
/// [K, n] for products of about `rows` rows on `threads` threads. oneDNN's
/// kernels share a product's column blocks among the threads, and its own
/// choice, blocks of 64, can share them badly: the backward per-step
/// product of a 420-wide LSTM (32 x 1680 times 1680 x 420) has 7 blocks,
/// 4 on one thread and 3 on the other, and ran 1.69x faster on two threads
/// than on one where the forward one's 27 blocks ran 1.81x. Blocks of 48 or
/// 32 are taken when they cut the busiest thread's columns by a tenth or
/// more (420 columns: 256 -> 224; that product 121 -> 106 us in bfloat16
/// and 245 -> 211 us in float32, 2 threads); otherwise 64, which reads b
/// fastest. 64 for one thread, and for more than 128 rows (oneDNN then
/// shares the rows too).
int64_t packed_column_block(int64_t rows, int64_t n, int threads);

/// The right operand b [K, N] of many products a · b (a recurrence's W_hhᵀ
/// at every time step), copied once into the blocked layout oneDNN's
/// kernels read fastest: at the per-step sizes (32 x 650 times 650 x 2600)
/// that runs at 1.6x the rate of reading b as it lies in float32, and at
/// 1.2x in bfloat16 (250 against 300 us on 2 threads), where the copy is
/// bfloat16 and, without autograd, kept while b is unchanged (once per
/// weight and thread, as gemm_out's bfloat16 copies). A bfloat16 matrix
/// for a single product (uses = 1: an input projection, whose row count
/// changes with every batch) gains about 5% packed, less than a primitive
/// for each new row count costs to build, so a row count gets its
/// primitive only when it has come 8 times (before that, b as it lies,
/// the cached plain copy). int8 products read b as it lies, as do products
/// without oneDNN (float64, CELLSTATE_GEMM=torch): the matrix holds b and
/// calls gemm_out. It is a snapshot: build it after the last change to b.
class PackedMatrix {
 public:
  /// `rows`: the usual row count of a (picks the layout; other counts
  /// work); `uses`: how many products will read it. Copying b costs about
  /// what a product of a few hundred rows gains, so b is packed only when
  /// rows x uses reaches kMinPackedRows (a 7-token prompt reads W_hh as it
  /// lies), and only when b has at least kMinPackedElements: below that the
  /// copy oneDNN makes of b inside each product costs little (a character
  /// LSTM's 25 x 100 products take the same time either way), while a packed
  /// b needs a primitive of its own for every row count a batch brings.
  PackedMatrix(const torch::Tensor& b, int64_t rows, int64_t uses = 1);
  static constexpr int64_t kMinPackedRows = 256;
  static constexpr int64_t kMinPackedElements = int64_t{1} << 16;
  ~PackedMatrix();
  PackedMatrix(const PackedMatrix&) = delete;
  PackedMatrix& operator=(const PackedMatrix&) = delete;

  /// out = beta * out + a · b (+ bias), as gemm_out. A float32 product
  /// reads the packed copy (from the second product of its row count on);
  /// a product at another precision reads b as it lies.
  void gemm_out(const torch::Tensor& out, const torch::Tensor& a, double beta = 0,
                const torch::Tensor& bias = {}) const;

  /// The same on float32 rows (b float32): out [M, N] = beta * out +
  /// a [M, K] · b (+ bias, N floats or null). Shapes are checked
  /// (TORCH_CHECK); a and out must not overlap.
  void gemm_out(const MatrixRows& out, const MatrixRows& a, double beta = 0, const float* bias = nullptr) const;

 private:
  struct Packed;
  torch::Tensor b_;
  std::unique_ptr<Packed> packed_;  // null: products go through gemm_out
};

}  // namespace cellstate
