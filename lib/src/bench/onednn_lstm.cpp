#include "onednn_lstm.h"

#include <torch/torch.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <stdexcept>
#include <unordered_map>

namespace cellstate::detail {

struct OneDnnLstm::State {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  dnnl::lstm_forward primitive;
  std::unordered_map<int, dnnl::memory> args;
  torch::Tensor src;  // keeps the input's storage alive
};

OneDnnLstm::OneDnnLstm(const BenchConfig& c) : state_(std::make_unique<State>()) {
  if (c.kind != RecurrentKind::kLSTM || c.step)
    throw std::invalid_argument("oneDNN's LSTM peer times whole-sequence LSTM forward passes only");
  if (c.layers > 1 && c.input != c.hidden * (c.bidirectional ? 2 : 1))
    throw std::invalid_argument("oneDNN's LSTM stacks layers only when --input equals the layers' output size");
  using dnnl::memory;
  using tag = memory::format_tag;
  const auto f32 = memory::data_type::f32;
  // bf16: data and weights in bfloat16, bias (and the cell state) float32;
  // the peer of int8 products too (its fastest LSTM on a CPU with AVX512_BF16).
  const bool bf16 = c.precision == MatmulPrecision::kBFloat16 ||
                    (c.precision == MatmulPrecision::kInt8 && cpu_supports_bf16());
  const auto data = bf16 ? memory::data_type::bf16 : f32;
  auto& s = *state_;
  const int64_t L = c.layers, D = c.bidirectional ? 2 : 1, T = c.seq, N = c.batch, C = c.input, O = c.hidden;
  const memory::desc src_md({T, N, C}, data, tag::tnc), dst_md({T, N, D * O}, data, tag::tnc);
  const memory::desc wl_any({L, D, C, 4, O}, data, tag::any), wi_any({L, D, O, 4, O}, data, tag::any);
  const memory::desc bias_md({L, D, 4, O}, f32, tag::ldgo);
  const auto direction = c.bidirectional ? dnnl::rnn_direction::bidirectional_concat
                                         : dnnl::rnn_direction::unidirectional_left2right;
  const dnnl::lstm_forward::desc desc(dnnl::prop_kind::forward_inference, direction, src_md, memory::desc(),
                                      memory::desc(), wl_any, wi_any, bias_md, dst_md, memory::desc(),
                                      memory::desc());
  const dnnl::lstm_forward::primitive_desc pd(desc, s.engine);
  s.primitive = dnnl::lstm_forward(pd);
  // Weights as PyTorch initialises them, reordered once into the primitive's layout.
  const double bound = 1.0 / std::sqrt(static_cast<double>(O));
  auto uniform = [&](std::vector<int64_t> sizes) { return torch::empty(sizes).uniform_(-bound, bound); };
  const auto wl = uniform({L, D, C, 4, O}), wi = uniform({L, D, O, 4, O});
  const auto bias = uniform({L, D, 4, O});
  s.src = torch::randn({T, N, C}).to(bf16 ? torch::kBFloat16 : torch::kFloat);
  auto packed = [&](const torch::Tensor& t, const memory::desc& plain_md, const memory::desc& want) {
    memory plain(plain_md, s.engine, t.data_ptr());
    memory out(want, s.engine);
    dnnl::reorder(plain, out).execute(s.stream, plain, out);
    s.stream.wait();
    return out;
  };
  s.args = {{DNNL_ARG_SRC_LAYER, memory(src_md, s.engine, s.src.data_ptr())},
            {DNNL_ARG_WEIGHTS_LAYER, packed(wl, memory::desc({L, D, C, 4, O}, f32, tag::ldigo), pd.weights_layer_desc())},
            {DNNL_ARG_WEIGHTS_ITER, packed(wi, memory::desc({L, D, O, 4, O}, f32, tag::ldigo), pd.weights_iter_desc())},
            {DNNL_ARG_BIAS, packed(bias, bias_md, pd.bias_desc())},
            {DNNL_ARG_DST_LAYER, memory(pd.dst_layer_desc(), s.engine)}};
  if (pd.scratchpad_desc().get_size() > 0) s.args.emplace(DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), s.engine));
  if (pd.workspace_desc().get_size() > 0) s.args.emplace(DNNL_ARG_WORKSPACE, memory(pd.workspace_desc(), s.engine));
}

OneDnnLstm::~OneDnnLstm() = default;

void OneDnnLstm::forward() {
  state_->primitive.execute(state_->stream, state_->args);
  state_->stream.wait();
}

}  // namespace cellstate::detail
