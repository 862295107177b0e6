#include "cellstate/nn/rnn.h"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <stdexcept>

#include "cellstate/nn/concurrent.h"
#include "cellstate/nn/dropout.h"
#include "cellstate/nn/gemm.h"
#include "init.h"
#include "recurrent_kernels.h"

namespace cellstate {

using torch::Tensor;

RecurrentKind parse_recurrent_kind(const std::string& name) {
  if (name == "lstm") return RecurrentKind::kLSTM;
  if (name == "gru") return RecurrentKind::kGRU;
  if (name == "rnn") return RecurrentKind::kRNN;
  throw std::invalid_argument("unknown recurrent kind '" + name + "': expected lstm, gru or rnn");
}

Implementation parse_implementation(const std::string& name) {
  if (name == "custom") return Implementation::kCustom;
  if (name == "builtin") return Implementation::kBuiltin;
  throw std::invalid_argument("unknown implementation '" + name +
                              "': expected custom or builtin");
}

std::string to_string(RecurrentKind kind) {
  switch (kind) {
    case RecurrentKind::kLSTM: return "lstm";
    case RecurrentKind::kGRU: return "gru";
    case RecurrentKind::kRNN: return "rnn";
  }
  return "?";
}

std::string to_string(Implementation impl) {
  return impl == Implementation::kCustom ? "custom" : "builtin";
}

int64_t gate_count(RecurrentKind kind) {
  switch (kind) {
    case RecurrentKind::kLSTM: return 4;
    case RecurrentKind::kGRU: return 3;
    case RecurrentKind::kRNN: return 1;
  }
  return 1;
}

RecurrentOptions::RecurrentOptions(int64_t input_size, int64_t hidden_size)
    : input_size_(input_size), hidden_size_(hidden_size) {}

// ---------------------------------------------------------------------------
// RecurrentModuleImpl

RecurrentModuleImpl::RecurrentModuleImpl(RecurrentOptions options) : options(std::move(options)) {}

void RecurrentModuleImpl::validate_options() const {
  const auto& o = options;
  TORCH_CHECK(o.input_size() > 0, "recurrent module: input_size must be positive, got ",
              o.input_size());
  TORCH_CHECK(o.hidden_size() > 0, "recurrent module: hidden_size must be positive, got ",
              o.hidden_size());
  TORCH_CHECK(o.num_layers() > 0, "recurrent module: num_layers must be positive, got ",
              o.num_layers());
  TORCH_CHECK(o.dropout() >= 0.0 && o.dropout() < 1.0,
              "recurrent module: dropout must be in [0, 1), got ", o.dropout());
  TORCH_CHECK(o.weight_dropout() >= 0.0 && o.weight_dropout() < 1.0,
              "recurrent module: weight_dropout must be in [0, 1), got ", o.weight_dropout());
}

std::string RecurrentModuleImpl::parameter_name(const std::string& base, int64_t layer,
                                                bool reverse) {
  return base + "_l" + std::to_string(layer) + (reverse ? "_reverse" : "");
}

void RecurrentModuleImpl::register_layer_parameters() {
  const auto& o = options;
  const int64_t gh = gate_count(o.kind()) * o.hidden_size();
  for (int64_t layer = 0; layer < o.num_layers(); ++layer) {
    const int64_t in = layer == 0 ? o.input_size() : output_size();
    for (int64_t dir = 0; dir < num_directions(); ++dir) {
      const bool rev = dir == 1;
      auto w_ih = register_parameter(parameter_name("weight_ih", layer, rev),
                                     torch::empty({gh, in}));
      auto w_hh = register_parameter(parameter_name("weight_hh", layer, rev),
                                     torch::empty({gh, o.hidden_size()}));
      detail::init_uniform(w_ih, o.hidden_size());
      detail::init_uniform(w_hh, o.hidden_size());
      if (!o.bias()) continue;
      auto b_ih = register_parameter(parameter_name("bias_ih", layer, rev), torch::empty({gh}));
      auto b_hh = register_parameter(parameter_name("bias_hh", layer, rev), torch::empty({gh}));
      detail::init_uniform(b_ih, o.hidden_size());
      detail::init_uniform(b_hh, o.hidden_size());
      if (o.forget_bias() && o.kind() == RecurrentKind::kLSTM) {
        detail::set_forget_bias(b_ih, b_hh, o.hidden_size(), *o.forget_bias());
      }
    }
  }
}

void RecurrentModuleImpl::check_state_args(int64_t B, torch::ScalarType dtype, const RecurrentState& state) const {
  const auto& o = options;
  const std::vector<int64_t> state_shape{o.num_layers() * num_directions(), B, o.hidden_size()};
  auto check_state = [&](const Tensor& s, const char* name) {
    if (!s.defined()) return;
    TORCH_CHECK(s.sizes() == at::IntArrayRef(state_shape), "recurrent module: expected initial ",
                name, " of shape ", at::IntArrayRef(state_shape), ", got ", s.sizes());
    TORCH_CHECK(s.scalar_type() == dtype, "recurrent module: expected initial ",
                name, " of type ", dtype, ", got ", s.scalar_type());
  };
  check_state(state.h, "h");
  if (o.kind() == RecurrentKind::kLSTM) {
    check_state(state.c, "c");
  } else {
    TORCH_CHECK(!state.c.defined(), "recurrent module: a ", to_string(o.kind()),
                " has no cell state, but an initial c was given");
  }
}

std::pair<int64_t, int64_t> RecurrentModuleImpl::check_forward_args(
    const Tensor& input, const Tensor& lengths, const RecurrentState& state) const {
  const auto& o = options;
  const char* layout = o.batch_first() ? "[batch, time, features]" : "[time, batch, features]";
  TORCH_CHECK(input.defined(), "recurrent module: input is undefined");
  TORCH_CHECK(input.dim() == 3, "recurrent module: expected input of rank 3 ", layout,
              ", got rank ", input.dim(), " with shape ", input.sizes());
  TORCH_CHECK(input.size(2) == o.input_size(), "recurrent module: expected input feature size ",
              o.input_size(), ", got ", input.size(2), " (input shape ", input.sizes(), ")");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "recurrent module: expected a floating-point input, got ", input.scalar_type());
  const auto params = parameters(/*recurse=*/false);
  TORCH_CHECK(params.empty() || params.front().scalar_type() == input.scalar_type(),
              "recurrent module: expected input of type ", params.front().scalar_type(),
              " (the module's parameters), got ", input.scalar_type());
  const int64_t T = input.size(o.batch_first() ? 1 : 0);
  const int64_t B = input.size(o.batch_first() ? 0 : 1);
  TORCH_CHECK(T > 0 && B > 0, "recurrent module: expected at least one step and one sequence, got input shape ",
              input.sizes());
  if (lengths.defined()) {
    TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == B,
                "recurrent module: expected lengths of shape [", B, "], got ", lengths.sizes());
    TORCH_CHECK(!at::isFloatingType(lengths.scalar_type()) && lengths.scalar_type() != at::kBool,
                "recurrent module: expected integer lengths, got ", lengths.scalar_type());
    const auto l = lengths.to(torch::kCPU, torch::kLong).contiguous();
    const auto* p = l.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK(p[b] >= 1 && p[b] <= T, "recurrent module: expected every length in [1, ", T,
                  "], got lengths[", b, "] = ", p[b]);
    }
  }
  check_state_args(B, input.scalar_type(), state);
  return {T, B};
}

namespace {

void print_options(std::ostream& stream, const char* impl, const RecurrentOptions& o) {
  stream << "cellstate::" << impl << "Recurrent(" << to_string(o.kind()) << ", "
         << o.input_size() << ", " << o.hidden_size() << ", num_layers=" << o.num_layers()
         << ", bias=" << (o.bias() ? "true" : "false")
         << ", batch_first=" << (o.batch_first() ? "true" : "false")
         << ", dropout=" << o.dropout();
  if (o.locked_dropout()) stream << ", locked_dropout=true";
  if (o.weight_dropout() > 0) stream << ", weight_dropout=" << o.weight_dropout();
  stream         << ", bidirectional=" << (o.bidirectional() ? "true" : "false") << ")";
}

/// The batch sorted longest first, as the packed layout needs.
struct SortedBatch {
  Tensor order;    // sorted position → original index
  Tensor inverse;  // original index → sorted position
  std::vector<int64_t> batch_sizes;  // active sequences per step
};

/// Empty result (no sorting needed) when every sequence has all T steps.
SortedBatch sort_by_length(const Tensor& lengths, int64_t T) {
  SortedBatch s;
  if (!lengths.defined()) return s;
  const auto l = lengths.to(torch::kCPU, torch::kLong);
  if (l.min().item<int64_t>() == T) return s;
  auto sorted = l.sort(/*dim=*/0, /*descending=*/true);
  s.order = std::get<1>(sorted);
  s.inverse = torch::empty_like(s.order);
  s.inverse.index_put_({s.order}, torch::arange(s.order.size(0)));
  const auto sorted_len = std::get<0>(sorted).contiguous();
  const auto* p = sorted_len.data_ptr<int64_t>();
  s.batch_sizes.assign(T, 0);
  for (int64_t b = 0; b < sorted_len.size(0); ++b) {
    for (int64_t t = 0; t < p[b]; ++t) ++s.batch_sizes[t];
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------
// CustomRecurrentImpl

namespace {

/// The four parameters of one layer and direction (biases undefined when absent).
detail::LayerParams layer_params(const torch::OrderedDict<std::string, Tensor>& params,
                                 int64_t layer, bool reverse) {
  auto get = [&](const char* base) {
    const auto* p = params.find(RecurrentModuleImpl::parameter_name(base, layer, reverse));
    return p ? *p : Tensor();
  };
  return {get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")};
}

}  // namespace

CustomRecurrentImpl::CustomRecurrentImpl(RecurrentOptions options)
    : CloneableFrom(std::move(options)) {
  reset();
}

void CustomRecurrentImpl::reset() {
  validate_options();
  register_layer_parameters();
}

void CustomRecurrentImpl::pretty_print(std::ostream& stream) const {
  print_options(stream, "Custom", options);
}

RecurrentOutput CustomRecurrentImpl::forward(const Tensor& input, const Tensor& lengths,
                                             const RecurrentState& state) {
  return forward_with_kernels(input, lengths, state);
}

RecurrentOutput RecurrentModuleImpl::forward_with_kernels(const Tensor& input, const Tensor& lengths,
                                                          const RecurrentState& state) {
  const auto [T, B] = check_forward_args(input, lengths, state);
  const auto& o = options;
  const int64_t H = o.hidden_size();
  const int64_t D = num_directions();
  const bool lstm = o.kind() == RecurrentKind::kLSTM;
  const auto sorted = sort_by_length(lengths, T);
  const bool varlen = !sorted.batch_sizes.empty();

  Tensor x = o.batch_first() ? input.transpose(0, 1) : input;
  Tensor h0 = state.h, c0 = state.c;
  if (varlen) {
    x = x.index_select(1, sorted.order);
    if (h0.defined()) h0 = h0.index_select(1, sorted.order);
    if (c0.defined()) c0 = c0.index_select(1, sorted.order);
  }
  x = x.contiguous();
  const auto zeros = torch::zeros({B, H}, x.options());
  const auto params = named_parameters(/*recurse=*/false);

  // Without autograd, a bidirectional layer's directions run at once, one
  // core each (nn/concurrent.h), when the layer is worth a parallel
  // region: about 10 MFLOP a direction (~0.1 ms), not a short sentence.
  const bool records = torch::GradMode::is_enabled() &&
                       (input.requires_grad() || (h0.defined() && h0.requires_grad()) ||
                        (c0.defined() && c0.requires_grad()) ||
                        std::any_of(params.begin(), params.end(),
                                    [](const auto& p) { return p.value().requires_grad(); }));
  const int64_t gate_rows = o.kind() == RecurrentKind::kLSTM ? 4 : o.kind() == RecurrentKind::kGRU ? 3 : 1;
  const int64_t direction_flops = 2 * T * B * gate_rows * H * (std::max(o.input_size(), D * H) + H);
  const bool dropconnect = o.weight_dropout() > 0 && is_training();  // draws: kept in order
  const bool concurrent = D == 2 && !records && !dropconnect && direction_flops >= 10'000'000 &&
                          can_run_concurrently(D);

  std::vector<Tensor> h_n, c_n;
  for (int64_t layer = 0; layer < o.num_layers(); ++layer) {
    std::vector<detail::LayerResult> results(D);
    // Without autograd a bidirectional layer's directions write their halves
    // of one [T, B, 2H] output (each zeroing its rows past a sequence's end)
    // instead of being concatenated afterwards.
    const Tensor shared = D == 2 && !records ? torch::empty({T, B, D * H}, x.options()) : Tensor();
    auto run_direction = [&](int64_t dir) {
      const bool rev = dir == 1;
      const int64_t index = layer * D + dir;
      auto p = layer_params(params, layer, rev);
      if (dropconnect) p.w_hh = drop_connect(p.w_hh, o.weight_dropout());
      const Tensor half = shared.defined() ? shared.narrow(2, dir * H, H) : Tensor();
      results[dir] = detail::run_layer(o.kind(), rev, x, h0.defined() ? h0[index] : zeros,
                                       lstm ? (c0.defined() ? c0[index] : zeros) : Tensor(), p,
                                       sorted.batch_sizes, half);
    };
    if (concurrent) {
      run_concurrently(D, run_direction);
    } else {
      for (int64_t dir = 0; dir < D; ++dir) run_direction(dir);
    }
    for (auto& r : results) {
      h_n.push_back(r.h_n);
      if (lstm) c_n.push_back(r.c_n);
    }
    if (shared.defined()) {
      x = shared;  // the directions wrote their halves
    } else {
      x = D == 1 ? results[0].y : torch::cat({results[0].y, results[1].y}, /*dim=*/2);
    }
    if (layer + 1 < o.num_layers() && o.dropout() > 0 && is_training()) {
      // Sorted rows are sequences as well: a locked mask per row is one per sequence.
      x = o.locked_dropout() ? locked_dropout(x, o.dropout()) : cellstate::dropout(x, o.dropout(), /*train=*/true);
    }
  }
  RecurrentOutput out{x, {torch::stack(h_n), lstm ? torch::stack(c_n) : Tensor()}};
  if (varlen) {
    out.output = out.output.index_select(1, sorted.inverse);
    out.state.h = out.state.h.index_select(1, sorted.inverse);
    if (lstm) out.state.c = out.state.c.index_select(1, sorted.inverse);
  }
  if (o.batch_first()) out.output = out.output.transpose(0, 1);
  return out;
}

RecurrentState CustomRecurrentImpl::step(const Tensor& input, const RecurrentState& state) {
  const auto& o = options;
  TORCH_CHECK(input.dim() == 2, "step: expected input of shape [batch, ", o.input_size(),
              "], got ", input.sizes());
  const std::vector<int64_t> shape{o.num_layers(), input.size(0), o.hidden_size()};
  const bool lstm = o.kind() == RecurrentKind::kLSTM;
  RecurrentState next{state.h.defined() ? state.h.contiguous().clone()
                                        : torch::zeros(shape, input.options()),
                      lstm ? (state.c.defined() ? state.c.contiguous().clone()
                                                : torch::zeros(shape, input.options()))
                           : Tensor()};
  step_(input, next);
  return next;
}

void CustomRecurrentImpl::check_step_state(int64_t batch, const RecurrentState& state) const {
  const auto& o = options;
  TORCH_CHECK(!o.bidirectional(), "step: a bidirectional module cannot run step by step");
  const bool lstm = o.kind() == RecurrentKind::kLSTM;
  TORCH_CHECK(state.h.defined() && (!lstm || state.c.defined()),
              "step_: expected a defined state of shape [", o.num_layers(), ", ", batch, ", ",
              o.hidden_size(), "] to update in place");
  TORCH_CHECK(state.h.is_contiguous() && (!lstm || state.c.is_contiguous()),
              "step_: expected contiguous state tensors");
}

void CustomRecurrentImpl::step_(const Tensor& input, RecurrentState& state) {
  const auto& o = options;
  TORCH_CHECK(input.dim() == 2 && input.size(1) == o.input_size(),
              "step: expected input of shape [batch, ", o.input_size(), "], got ", input.sizes());
  check_step_state(input.size(0), state);
  check_forward_args(input.unsqueeze(o.batch_first() ? 1 : 0), Tensor(), state);
  const bool lstm = o.kind() == RecurrentKind::kLSTM;
  const auto params = named_parameters(/*recurse=*/false);
  Tensor x = input.contiguous();
  for (int64_t layer = 0; layer < o.num_layers(); ++layer) {
    Tensor h = state.h[layer];
    Tensor c = lstm ? state.c[layer] : Tensor();
    detail::step_layer(o.kind(), x, h, c, layer_params(params, layer, false), step_gates_,
                       step_gh_);
    x = h;
  }
}

void CustomRecurrentImpl::step_projected_(const Tensor& input_gates, RecurrentState& state) {
  const auto& o = options;
  TORCH_CHECK(input_gates.dim() == 2, "step: expected input gates of shape [batch, ",
              gate_count(o.kind()) * o.hidden_size(), "], got ", input_gates.sizes());
  const int64_t B = input_gates.size(0);
  check_step_state(B, state);
  TORCH_CHECK(at::isFloatingType(input_gates.scalar_type()), "step: expected floating-point input gates, got ",
              input_gates.scalar_type());
  check_state_args(B, input_gates.scalar_type(), state);
  const bool lstm = o.kind() == RecurrentKind::kLSTM;
  const auto params = named_parameters(/*recurse=*/false);
  Tensor x;
  for (int64_t layer = 0; layer < o.num_layers(); ++layer) {
    Tensor h = state.h[layer];
    Tensor c = lstm ? state.c[layer] : Tensor();
    const auto p = layer_params(params, layer, false);
    if (layer == 0) {
      detail::step_layer_projected(o.kind(), input_gates, h, c, p, step_gates_, step_gh_);
    } else {
      detail::step_layer(o.kind(), x, h, c, p, step_gates_, step_gh_);
    }
    x = h;
  }
}

// ---------------------------------------------------------------------------
// BuiltinRecurrentImpl

namespace {

/// LibTorch's CPU autocast to bfloat16 for the scope, when `on`: inside
/// ATen's recurrences, the products (linear, matmul) take bfloat16 operands
/// while the cell states stay float32 — the built-in counterpart of the
/// custom kernels' bf16 products. Restores the thread's previous setting
/// and clears autocast's cache of cast weights on leaving the outermost scope.
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool on) : on_(on) {
    if (!on_) return;
    was_enabled_ = at::autocast::is_cpu_enabled();
    was_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~Bf16Autocast() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(was_enabled_);
    at::autocast::set_autocast_cpu_dtype(was_dtype_);
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool on_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

}  // namespace

BuiltinRecurrentImpl::BuiltinRecurrentImpl(RecurrentOptions options)
    : CloneableFrom(std::move(options)) {
  reset();
}

void BuiltinRecurrentImpl::reset() {
  validate_options();
  const auto& o = options;
  torch::nn::Module* inner = nullptr;
  switch (o.kind()) {
    case RecurrentKind::kLSTM:
      lstm_ = torch::nn::LSTM(torch::nn::LSTMOptions(o.input_size(), o.hidden_size())
                                  .num_layers(o.num_layers())
                                  .bias(o.bias())
                                  .dropout(o.dropout())
                                  .bidirectional(o.bidirectional()));
      inner = lstm_.get();
      break;
    case RecurrentKind::kGRU:
      gru_ = torch::nn::GRU(torch::nn::GRUOptions(o.input_size(), o.hidden_size())
                                .num_layers(o.num_layers())
                                .bias(o.bias())
                                .dropout(o.dropout())
                                .bidirectional(o.bidirectional()));
      inner = gru_.get();
      break;
    case RecurrentKind::kRNN:
      rnn_ = torch::nn::RNN(torch::nn::RNNOptions(o.input_size(), o.hidden_size())
                                .num_layers(o.num_layers())
                                .bias(o.bias())
                                .dropout(o.dropout())
                                .bidirectional(o.bidirectional()));
      inner = rnn_.get();
      break;
  }
  // The built-in module's own tensors, registered here under their names:
  // loading a state dict into this module loads it into the built-in one.
  for (auto& p : inner->named_parameters(/*recurse=*/false)) {
    register_parameter(p.key(), p.value());
  }
  if (o.forget_bias() && o.kind() == RecurrentKind::kLSTM && o.bias()) {
    const auto params = named_parameters(false);
    for (int64_t layer = 0; layer < o.num_layers(); ++layer) {
      for (int64_t dir = 0; dir < num_directions(); ++dir) {
        auto b_ih = params[parameter_name("bias_ih", layer, dir == 1)];
        auto b_hh = params[parameter_name("bias_hh", layer, dir == 1)];
        detail::set_forget_bias(b_ih, b_hh, o.hidden_size(), *o.forget_bias());
      }
    }
  }
}

void BuiltinRecurrentImpl::pretty_print(std::ostream& stream) const {
  print_options(stream, "Builtin", options);
}

RecurrentOutput BuiltinRecurrentImpl::forward(const Tensor& input, const Tensor& lengths,
                                              const RecurrentState& state) {
  if (product_precision(input) == MatmulPrecision::kInt8) return forward_with_kernels(input, lengths, state);
  const auto [T, B] = check_forward_args(input, lengths, state);
  const auto& o = options;
  const int64_t D = num_directions();
  const bool lstm = o.kind() == RecurrentKind::kLSTM;
  const bool varlen = lengths.defined() && lengths.min().item<int64_t>() < T;
  namespace rnn_utils = torch::nn::utils::rnn;
  Tensor x = o.batch_first() ? input.transpose(0, 1) : input;
  // Packed: data [rows, features] and the active sequences per step, the
  // batch sorted longest first (the layout ATen's packed kernels take).
  const auto packed = varlen ? rnn_utils::pack_padded_sequence(x, lengths.to(torch::kCPU, torch::kLong),
                                                                /*batch_first=*/false, /*enforce_sorted=*/false)
                             : rnn_utils::PackedSequence(x, torch::empty({0}, torch::kLong));
  Tensor data = varlen ? packed.data() : x;
  const auto zeros = torch::zeros({o.num_layers() * D, B, o.hidden_size()}, x.options());
  Tensor h0 = state.h.defined() ? state.h : zeros;
  Tensor c0 = lstm ? (state.c.defined() ? state.c : zeros) : Tensor();
  if (varlen) {
    h0 = h0.index_select(1, packed.sorted_indices());
    if (lstm) c0 = c0.index_select(1, packed.sorted_indices());
  }
  const bool drop_weights = o.weight_dropout() > 0 && is_training();
  const auto params = named_parameters(/*recurse=*/false);
  std::vector<Tensor> h_n, c_n;
  // bf16 products (nn/gemm.h): results come back in the input's type below.
  const Bf16Autocast autocast(product_precision(input) == MatmulPrecision::kBFloat16);
  for (int64_t layer = 0; layer < o.num_layers(); ++layer) {
    // PyTorch's order: w_ih, w_hh, b_ih, b_hh of the forward, then the reverse direction.
    std::vector<Tensor> weights;
    for (int64_t dir = 0; dir < D; ++dir) {
      const auto p = layer_params(params, layer, dir == 1);
      weights.push_back(p.w_ih);
      weights.push_back(drop_weights ? drop_connect(p.w_hh, o.weight_dropout()) : p.w_hh);
      if (o.bias()) {
        weights.push_back(p.b_ih);
        weights.push_back(p.b_hh);
      }
    }
    const Tensor h = h0.narrow(0, layer * D, D);
    const bool train = is_training();
    const bool bi = o.bidirectional();
    if (lstm) {
      const Tensor c = c0.narrow(0, layer * D, D);
      auto r = varlen ? torch::lstm(data, packed.batch_sizes(), {h, c}, weights, o.bias(), 1, 0.0, train, bi)
                      : torch::lstm(data, {h, c}, weights, o.bias(), 1, 0.0, train, bi, false);
      data = std::get<0>(r);
      h_n.push_back(std::get<1>(r));
      c_n.push_back(std::get<2>(r));
    } else {
      const bool gru = o.kind() == RecurrentKind::kGRU;
      auto r = varlen ? (gru ? torch::gru(data, packed.batch_sizes(), h, weights, o.bias(), 1, 0.0, train, bi)
                             : torch::rnn_tanh(data, packed.batch_sizes(), h, weights, o.bias(), 1, 0.0, train, bi))
                      : (gru ? torch::gru(data, h, weights, o.bias(), 1, 0.0, train, bi, false)
                             : torch::rnn_tanh(data, h, weights, o.bias(), 1, 0.0, train, bi, false));
      data = std::get<0>(r);
      h_n.push_back(std::get<1>(r));
    }
    if (layer + 1 < o.num_layers() && o.dropout() > 0 && train) {
      if (!o.locked_dropout()) {
        data = cellstate::dropout(data, o.dropout(), /*train=*/true);
      } else {
        data = varlen ? locked_dropout_packed(data, packed.batch_sizes(), o.dropout())
                      : locked_dropout(data, o.dropout());
      }
    }
  }
  data = data.to(input.scalar_type());  // a plain RNN's outputs are bf16 under autocast
  RecurrentOutput out;
  out.output = data;
  out.state.h = torch::cat(h_n, 0).to(input.scalar_type());
  if (lstm) out.state.c = torch::cat(c_n, 0).to(input.scalar_type());
  if (varlen) {
    out.output = std::get<0>(rnn_utils::pad_packed_sequence(
        rnn_utils::PackedSequence(data, packed.batch_sizes(), packed.sorted_indices(), packed.unsorted_indices()),
        /*batch_first=*/false, 0.0, T));
    out.state.h = out.state.h.index_select(1, packed.unsorted_indices());
    if (lstm) out.state.c = out.state.c.index_select(1, packed.unsorted_indices());
  }
  if (o.batch_first()) out.output = out.output.transpose(0, 1);
  return out;
}

std::shared_ptr<RecurrentModuleImpl> make_recurrent(const RecurrentOptions& options) {
  if (options.impl() == Implementation::kBuiltin) {
    return std::make_shared<BuiltinRecurrentImpl>(options);
  }
  return std::make_shared<CustomRecurrentImpl>(options);
}

// ---------------------------------------------------------------------------
// LSTM, GRU and RNN: the custom module with torch::nn's call shapes.

LSTMImpl::LSTMImpl(RecurrentOptions options)
    : CloneableFrom(std::move(options.kind(RecurrentKind::kLSTM))) {}

std::tuple<Tensor, std::tuple<Tensor, Tensor>> LSTMImpl::forward(
    const Tensor& input, const std::tuple<Tensor, Tensor>& hx, const Tensor& lengths) {
  auto r = CustomRecurrentImpl::forward(input, lengths, {std::get<0>(hx), std::get<1>(hx)});
  return {r.output, {r.state.h, r.state.c}};
}

GRUImpl::GRUImpl(RecurrentOptions options)
    : CloneableFrom(std::move(options.kind(RecurrentKind::kGRU))) {}

std::tuple<Tensor, Tensor> GRUImpl::forward(const Tensor& input, const Tensor& hx,
                                            const Tensor& lengths) {
  auto r = CustomRecurrentImpl::forward(input, lengths, {hx, Tensor()});
  return {r.output, r.state.h};
}

RNNImpl::RNNImpl(RecurrentOptions options)
    : CloneableFrom(std::move(options.kind(RecurrentKind::kRNN))) {}

std::tuple<Tensor, Tensor> RNNImpl::forward(const Tensor& input, const Tensor& hx,
                                            const Tensor& lengths) {
  auto r = CustomRecurrentImpl::forward(input, lengths, {hx, Tensor()});
  return {r.output, r.state.h};
}

}  // namespace cellstate
