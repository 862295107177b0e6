#pragma once
// What the searches and samplers of decode/ need from a sequence model: the
// scores of the next token for each row of its state, and a way to reorder
// the rows (for beams). Models implement it (Seq2SeqStepper,
// LanguageModelStepper); decoding never sees the model itself.

#include <torch/types.h>

namespace cellstate {

class StepModel {
 public:
  virtual ~StepModel() = default;
  /// previous [N] int64 (the last token of each row) -> unnormalised scores of
  /// the next token [N, V]; advances the state one step. `attention` (if not
  /// null) receives [N, S] weights when the model has them.
  virtual torch::Tensor logits(const torch::Tensor& previous, torch::Tensor* attention) = 0;
  /// Keeps rows `rows` [M] int64 of the state, in that order (M may differ from N).
  virtual void select(const torch::Tensor& rows) = 0;
};

}  // namespace cellstate
