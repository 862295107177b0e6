#include "cellstate/dist/gradient_exchange.h"

// c10d's Reducer; its include of distributed autograd's context.h is served
// by c10d_compat/ where the package lacks it (see that file).
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>
#include <unordered_map>

#include "cellstate/util/timing.h"
#include "group_state.h"

namespace cellstate {

namespace {

/// Passes LibTorch's warnings on, but for the Reducer's advice to turn off
/// find_unused_parameters when it finds none unused: the search is what keeps
/// a parameter that no rank reached without a gradient, as in one process.
/// (LibTorch's warning handler is one for the process; this one is put in
/// front of it once, and lives as long as the process.)
class ReducerWarnings : public c10::WarningHandler {
 public:
  ReducerWarnings() : next_(c10::Warning::get_warning_handler()) {}
  void process(const c10::SourceLocation& where, const std::string& message, bool verbatim) override {
    if (message.rfind("find_unused_parameters=True was specified", 0) == 0) return;
    next_->process(where, message, verbatim);
  }

  static void install() {
    static ReducerWarnings filter;
    static std::once_flag once;
    std::call_once(once, [] { c10::Warning::set_warning_handler(&filter); });
  }

 private:
  c10::WarningHandler* next_;
};

}  // namespace

struct GradientExchange::Overlapped {
  std::unique_ptr<c10d::Reducer> reducer;
};

GradientExchange::GradientExchange(ProcessGroup group, std::vector<torch::Tensor> parameters,
                                   GradientExchangeOptions options)
    : group_(std::move(group)), parameters_(std::move(parameters)), options_(options) {
  TORCH_CHECK(std::isfinite(options_.bucket_mb) && options_.bucket_mb >= 0 && options_.bucket_mb <= 1024,
              "GradientExchange: expected a bucket size in [0, 1024] MB, got ", options_.bucket_mb);
  for (const auto& p : parameters_)
    TORCH_CHECK(p.requires_grad() && p.is_leaf(), "GradientExchange: expected leaf parameters that require gradients");
  if (!group_.distributed() || options_.bucket_mb == 0) return;
  // As DistributedDataParallel builds it: buckets filled in the reverse order
  // of the parameters (about the order the backward pass computes their
  // gradients), the first one small so that communication starts early.
  const auto cap = static_cast<size_t>(options_.bucket_mb * 1024 * 1024);
  const std::vector<size_t> limits{std::min<size_t>(cap, size_t{1} << 20), cap};
  const std::vector<bool> dense(parameters_.size(), false);
  auto assignment = c10d::compute_bucket_assignment_by_size(parameters_, limits, dense);
  auto buckets = std::get<0>(assignment);
  auto bucket_limits = std::get<1>(assignment);
  std::reverse(buckets.begin(), buckets.end());
  std::reverse(bucket_limits.begin(), bucket_limits.end());
  std::unordered_map<size_t, std::string> names;
  for (size_t i = 0; i < parameters_.size(); ++i) names[i] = "parameter " + std::to_string(i);
  ReducerWarnings::install();
  overlapped_ = std::make_unique<Overlapped>();
  overlapped_->reducer = std::make_unique<c10d::Reducer>(
      parameters_, std::move(buckets), std::move(bucket_limits), group_.state_->gloo, dense,
      static_cast<int64_t>(cap), /*find_unused_parameters=*/true, /*gradient_as_bucket_view=*/false, std::move(names),
      static_cast<int64_t>(limits[0]));
}

GradientExchange::~GradientExchange() = default;

void GradientExchange::backward(const torch::Tensor& objective, std::vector<double>& scalars) {
  TORCH_CHECK(!objective.defined() || objective.numel() == 1, "GradientExchange: expected a scalar objective, got ",
              objective.defined() ? objective.numel() : 0, " elements");
  const Stopwatch whole;
  ++calls_;
  if (overlapped_) {
    overlapped_backward(objective);
  } else if (objective.defined()) {
    objective.backward();
  }
  // What is left after the backward pass: the flat exchange's gradients, and the scalars.
  const Stopwatch after;
  if (!overlapped_) sum_flat_gradients();
  auto small = torch::tensor(scalars, torch::kFloat64);
  std::vector<torch::Tensor> one{small};
  group_.all_reduce_sum(one);
  for (size_t k = 0; k < scalars.size(); ++k) scalars[k] = small[static_cast<int64_t>(k)].item<double>();
  seconds_ += after.seconds();
  backward_seconds_ += whole.seconds();
}

void GradientExchange::overlapped_backward(const torch::Tensor& objective) {
  // The Reducer averages each bucket over the ranks; the objective is scaled
  // by N so that the average is the sum. A rank with an empty shard still
  // takes part in every bucket's all-reduce, with zero gradients.
  const double n = static_cast<double>(group_.size());
  torch::Tensor scaled;
  if (objective.defined()) {
    scaled = objective.reshape({}) * n;
  } else {
    scaled = torch::zeros({});
    for (const auto& p : parameters_) scaled = scaled + p.sum() * 0.0;
  }
  try {
    overlapped_->reducer->prepare_for_backward({scaled});
    scaled.backward();
  } catch (const std::exception& e) {
    throw DistributedError(group_.name() + ": the gradient exchange failed (another rank stopped, the network failed, or "
                           "--dist-timeout passed): " + dist_detail::first_line(e));
  }
}

void GradientExchange::sum_flat_gradients() {
  if (!group_.distributed()) return;
  int64_t total = 0;
  for (const auto& p : parameters_) total += p.numel();
  const auto count = static_cast<int64_t>(parameters_.size());
  if (!buffer_.defined() || buffer_.numel() != total + count) buffer_ = torch::empty({total + count}, torch::kFloat32);
  auto flags = buffer_.narrow(0, total, count);
  int64_t offset = 0;
  for (int64_t i = 0; i < count; ++i) {
    const auto& p = parameters_[static_cast<size_t>(i)];
    auto slot = buffer_.narrow(0, offset, p.numel());
    const auto& g = p.grad();
    TORCH_CHECK(!g.defined() || !g.is_sparse(), "data-parallel training: sparse gradients are not supported");
    if (g.defined()) slot.view(p.sizes()).copy_(g);
    else slot.zero_();
    flags[i] = g.defined() ? 1.0f : 0.0f;
    offset += p.numel();
  }
  std::vector<torch::Tensor> one{buffer_};
  group_.all_reduce_sum(one);
  offset = 0;
  const auto* f = flags.data_ptr<float>();
  for (int64_t i = 0; i < count; ++i) {
    const auto& p = parameters_[static_cast<size_t>(i)];
    auto slot = buffer_.narrow(0, offset, p.numel()).view(p.sizes());
    offset += p.numel();
    if (f[i] == 0) continue;  // no rank reached it
    if (p.grad().defined()) p.mutable_grad().copy_(slot);
    else p.mutable_grad() = slot.clone();
  }
}

}  // namespace cellstate
