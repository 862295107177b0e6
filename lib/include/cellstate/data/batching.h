#pragma once
// Batching: padding with lengths and masks, and length bucketing that keeps
// padding small while the order stays random and reproducible from a seed.

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace cellstate {

/// Sequences padded to the longest of the batch.
struct PaddedBatch {
  torch::Tensor ids;      // [B, T] int64, padded with `pad`
  torch::Tensor lengths;  // [B] int64
  torch::Tensor mask;     // [B, T] bool, true on real positions
};

/// Pads `sequences` (each non-empty) into a batch-first int64 tensor.
PaddedBatch pad_batch(const std::vector<std::vector<int64_t>>& sequences, int64_t pad = 0);

/// Shortens `ids` to at most `max_length` (0: no limit); true when it did.
bool truncate(std::vector<int64_t>& ids, int64_t max_length);

struct BucketOptions {
  /// Examples per batch (when max_tokens == 0).
  int64_t batch_size = 32;
  /// If > 0, batches hold as many examples as fit in max_tokens padded
  /// positions (at least one), instead of batch_size.
  int64_t max_tokens = 0;
  /// Examples are shuffled, cut into chunks of chunk_batches * batch_size,
  /// and sorted by length inside each chunk before batching; then the batches
  /// are shuffled. 1 gives nearly random batches, larger less padding.
  int64_t chunk_batches = 50;
  /// false: keep the input order inside chunks too (no shuffling at all).
  bool shuffle = true;
};

/// The batches of one epoch as lists of example indices. Depends only on
/// (lengths, options, seed, epoch), so training is reproducible and a
/// resumed run sees the same batches.
std::vector<std::vector<int64_t>> bucket_batches(const std::vector<int64_t>& lengths,
                                                 const BucketOptions& options, uint64_t seed,
                                                 int64_t epoch);

/// Batches for inference: examples sorted by length (longest first) and cut
/// into batches of batch_size; each batch lists original indices, so results
/// can be put back in input order.
std::vector<std::vector<int64_t>> sorted_batches(const std::vector<int64_t>& lengths,
                                                 int64_t batch_size);

}  // namespace cellstate
