#pragma once
// The gradient exchange of one data-parallel step: every rank back-propagates
// its share of the batch's loss, and the gradients are summed over the ranks
// before clipping and the optimiser step, so that every rank holds the
// gradient a one-process run over the whole batch would have computed:
//
//   rank r:  objective_r = (|shard_r| / |batch|) · mean loss over shard_r
//            g_r = ∂ objective_r / ∂θ
//   every rank after the exchange:  ∇θ = Σ_r g_r   (and Σ_r of `scalars`)
//
// Two ways, chosen with --dist-bucket-mb (TrainingOptions::dist_bucket_mb):
//
//   0    after the backward pass, one all-reduce of a flat float32 buffer
//        holding every gradient and a "reached" flag per parameter, and one of
//        the float64 scalars. Nothing overlaps the backward pass.
//   B>0  c10d's Reducer, the engine under PyTorch's DistributedDataParallel:
//        autograd hooks put each gradient, as soon as it is computed, into
//        buckets of about B MB (the first 1 MB, as DDP does), and each full
//        bucket is all-reduced by Gloo's threads while the backward pass goes
//        on; the backward pass returns when all are summed. Parameters no rank
//        reached are found by walking the graph from the objective.
//
// In both, a parameter no rank's shard reached keeps an undefined gradient, as
// in a one-process run; a rank whose shard is empty (more ranks than examples)
// contributes zeros.

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "cellstate/dist/process_group.h"

namespace cellstate {

struct GradientExchangeOptions {
  /// 0: one all-reduce after the backward pass; > 0: c10d's Reducer with
  /// buckets of about this many megabytes, overlapping the backward pass.
  double bucket_mb = 0;  // default: 0
};

class GradientExchange {
 public:
  /// `parameters`: what the optimiser steps (each requires a gradient; the same
  /// shapes in the same order on every rank).
  GradientExchange(ProcessGroup group, std::vector<torch::Tensor> parameters, GradientExchangeOptions options = {});
  ~GradientExchange();
  GradientExchange(const GradientExchange&) = delete;
  GradientExchange& operator=(const GradientExchange&) = delete;

  /// Back-propagates `objective` (a scalar; undefined when this rank's shard
  /// of the batch was empty) and sums the parameters' gradients and `scalars`
  /// over the ranks, in place. Every rank must call it once per step. Throws
  /// DistributedError when another rank is gone or --dist-timeout passes.
  void backward(const torch::Tensor& objective, std::vector<double>& scalars);

  /// Seconds spent exchanging after the backward pass (flat: the gradient
  /// all-reduce; Reducer: the scalars only, the rest overlaps), and steps.
  double seconds() const { return seconds_; }
  /// Seconds of the backward passes with their exchanges, in total.
  double backward_seconds() const { return backward_seconds_; }
  int64_t calls() const { return calls_; }

 private:
  void overlapped_backward(const torch::Tensor& objective);  // the Reducer's backward pass
  void sum_flat_gradients();  // the flat exchange, after the backward pass

  ProcessGroup group_;
  std::vector<torch::Tensor> parameters_;
  GradientExchangeOptions options_;
  torch::Tensor buffer_;
  struct Overlapped;  // the Reducer (c10d's header stays in the .cpp)
  std::unique_ptr<Overlapped> overlapped_;
  double seconds_ = 0;
  double backward_seconds_ = 0;
  int64_t calls_ = 0;
};

}  // namespace cellstate
