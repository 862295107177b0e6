#include "cellstate/nn/cells.h"

#include "cellstate/nn/gemm.h"
#include "init.h"
#include "recurrent_kernels.h"

namespace cellstate {

CellOptions::CellOptions(int64_t input_size, int64_t hidden_size)
    : input_size_(input_size), hidden_size_(hidden_size) {}

CellBaseImpl::CellBaseImpl(CellOptions options, int64_t gates, const char* name)
    : options(std::move(options)), gates_(gates), name_(name) {
  reset();
}

void CellBaseImpl::reset() {
  TORCH_CHECK(options.input_size() > 0, name_, ": input_size must be positive, got ",
              options.input_size());
  TORCH_CHECK(options.hidden_size() > 0, name_, ": hidden_size must be positive, got ",
              options.hidden_size());
  const int64_t h = options.hidden_size();
  weight_ih = register_parameter("weight_ih", torch::empty({gates_ * h, options.input_size()}));
  weight_hh = register_parameter("weight_hh", torch::empty({gates_ * h, h}));
  detail::init_uniform(weight_ih, h);
  detail::init_uniform(weight_hh, h);
  if (options.bias()) {
    bias_ih = register_parameter("bias_ih", torch::empty({gates_ * h}));
    bias_hh = register_parameter("bias_hh", torch::empty({gates_ * h}));
    detail::init_uniform(bias_ih, h);
    detail::init_uniform(bias_hh, h);
    if (options.forget_bias() && gates_ == 4) {
      detail::set_forget_bias(bias_ih, bias_hh, h, *options.forget_bias());
    }
  } else {
    bias_ih = register_parameter("bias_ih", torch::Tensor(), /*requires_grad=*/false);
    bias_hh = register_parameter("bias_hh", torch::Tensor(), /*requires_grad=*/false);
  }
}

void CellBaseImpl::pretty_print(std::ostream& stream) const {
  stream << "cellstate::" << name_ << "(" << options.input_size() << ", "
         << options.hidden_size() << ", bias=" << (options.bias() ? "true" : "false") << ")";
}

torch::Tensor CellBaseImpl::checked_state(const torch::Tensor& x, const torch::Tensor& state,
                                          const char* what) const {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == options.input_size(), name_,
              ": expected input of shape [batch, ", options.input_size(), "], got ",
              x.sizes());
  if (!state.defined()) {
    return torch::zeros({x.size(0), options.hidden_size()}, x.options());
  }
  TORCH_CHECK(state.dim() == 2 && state.size(0) == x.size(0) &&
                  state.size(1) == options.hidden_size(),
              name_, ": expected ", what, " of shape [", x.size(0), ", ",
              options.hidden_size(), "], got ", state.sizes());
  return state;
}

std::pair<torch::Tensor, torch::Tensor> CellBaseImpl::projections(const torch::Tensor& x,
                                                                  const torch::Tensor& h) const {
  return projections(x, h, {weight_ih, weight_hh, bias_ih, bias_hh});
}

std::pair<torch::Tensor, torch::Tensor> CellBaseImpl::projections(const torch::Tensor& x, const torch::Tensor& h,
                                                                  const std::array<torch::Tensor, 4>& w) const {
  return {linear_layer(x, w[0], w[2]), linear_layer(h, w[1], w[3])};
}

namespace {

/// Whether a step of `cell` on these inputs records gradients (grad mode on
/// and a parameter or input that requires them).
bool records_gradients(const CellBaseImpl& cell, std::initializer_list<const torch::Tensor*> inputs) {
  if (!torch::GradMode::is_enabled()) return false;
  for (const auto* t : {&cell.weight_ih, &cell.weight_hh, &cell.bias_ih, &cell.bias_hh})
    if (t->defined() && t->requires_grad()) return true;
  for (const auto* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

/// A step without autograd: (h', c') for x [B, I], h and c [B, H] (c
/// undefined for GRU and RNN).
std::pair<torch::Tensor, torch::Tensor> fused_step(const CellBaseImpl& cell, RecurrentKind kind,
                                                   const torch::Tensor& x, const torch::Tensor& h,
                                                   const torch::Tensor& c) {
  // The step of the custom recurrences (nn/recurrent_kernels.h): both
  // products into one gates buffer through nn/gemm.h, then one pass of the
  // nonlinearities and state updates; on copies of the state.
  auto h_next = h.clone(torch::MemoryFormat::Contiguous);
  auto c_next = c.defined() ? c.clone(torch::MemoryFormat::Contiguous) : torch::Tensor();
  torch::Tensor gates, gh;
  detail::step_layer(kind, x.contiguous(), h_next, c_next,
                     {cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh}, gates, gh);
  return {h_next, c_next};
}

}  // namespace

LSTMCellImpl::LSTMCellImpl(CellOptions options) : CloneableFrom(std::move(options), 4, "LSTMCell") {}

std::tuple<torch::Tensor, torch::Tensor> LSTMCellImpl::forward(
    const torch::Tensor& x, const std::tuple<torch::Tensor, torch::Tensor>& hx) {
  return step(x, hx, {weight_ih, weight_hh, bias_ih, bias_hh});
}

std::tuple<torch::Tensor, torch::Tensor> LSTMCellImpl::forward_with(const torch::Tensor& x,
                                                                    const std::tuple<torch::Tensor, torch::Tensor>& hx,
                                                                    const StepWeights& weights) {
  TORCH_CHECK(weights.size() == 4, "LSTMCell: expected its 4 weights passed through StepWeights, got ",
              weights.size());
  const std::array<const torch::Tensor*, 4> owns{&weight_ih, &weight_hh, &bias_ih, &bias_hh};
  for (size_t i = 0; i < owns.size(); ++i) {
    const auto& own = *owns[i];
    TORCH_CHECK(weights[i].defined() == own.defined() && (!own.defined() || weights[i].sizes() == own.sizes()),
                "LSTMCell: passed weight ", i, " is ", weights[i].defined() ? weights[i].sizes() : torch::IntArrayRef{},
                ", expected ", own.defined() ? own.sizes() : torch::IntArrayRef{});
  }
  return step(x, hx, {weights[0], weights[1], weights[2], weights[3]});
}

StepWeights LSTMCellImpl::step_weights() const { return StepWeights({weight_ih, weight_hh, bias_ih, bias_hh}); }

std::tuple<torch::Tensor, torch::Tensor> LSTMCellImpl::step(const torch::Tensor& x,
                                                            const std::tuple<torch::Tensor, torch::Tensor>& hx,
                                                            const std::array<torch::Tensor, 4>& w) {
  const auto h = checked_state(x, std::get<0>(hx), "h");
  const auto c = checked_state(x, std::get<1>(hx), "c");
  if (!records_gradients(*this, {&x, &h, &c})) {
    auto [h_next, c_next] = fused_step(*this, RecurrentKind::kLSTM, x, h, c);
    return {h_next, c_next};
  }
  if (x.scalar_type() == torch::kFloat) {
    // Training: a one-step custom recurrence, its backward hand-written.
    auto out = detail::run_layer(RecurrentKind::kLSTM, false, x.unsqueeze(0).contiguous(), h.contiguous(),
                                 c.contiguous(), {w[0], w[1], w[2], w[3]}, {});
    return {out.h_n, out.c_n};
  }
  const auto [xi, hh] = projections(x, h, w);
  const auto gates = (xi + hh).chunk(4, 1);
  const auto i = torch::sigmoid(gates[0]);
  const auto f = torch::sigmoid(gates[1]);
  const auto g = torch::tanh(gates[2]);
  const auto o = torch::sigmoid(gates[3]);
  auto c_next = f * c + i * g;
  auto h_next = o * torch::tanh(c_next);
  return {h_next, c_next};
}

GRUCellImpl::GRUCellImpl(CellOptions options) : CloneableFrom(std::move(options), 3, "GRUCell") {}

torch::Tensor GRUCellImpl::forward(const torch::Tensor& x, const torch::Tensor& h_in) {
  const auto h = checked_state(x, h_in, "h");
  if (!records_gradients(*this, {&x, &h})) return fused_step(*this, RecurrentKind::kGRU, x, h, {}).first;
  const auto [xi, hh] = projections(x, h);
  const auto xg = xi.chunk(3, 1);
  const auto hg = hh.chunk(3, 1);
  const auto r = torch::sigmoid(xg[0] + hg[0]);
  const auto z = torch::sigmoid(xg[1] + hg[1]);
  const auto n = torch::tanh(xg[2] + r * hg[2]);
  return (1 - z) * n + z * h;
}

RNNCellImpl::RNNCellImpl(CellOptions options) : CloneableFrom(std::move(options), 1, "RNNCell") {}

torch::Tensor RNNCellImpl::forward(const torch::Tensor& x, const torch::Tensor& h_in) {
  const auto h = checked_state(x, h_in, "h");
  if (!records_gradients(*this, {&x, &h})) return fused_step(*this, RecurrentKind::kRNN, x, h, {}).first;
  const auto [xi, hh] = projections(x, h);
  return torch::tanh(xi + hh);
}

}  // namespace cellstate
