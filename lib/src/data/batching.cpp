#include "cellstate/data/batching.h"

#include "cellstate/util/random.h"

#include <torch/torch.h>

#include <algorithm>
#include <numeric>

namespace cellstate {

PaddedBatch pad_batch(const std::vector<std::vector<int64_t>>& sequences, int64_t pad) {
  TORCH_CHECK(!sequences.empty(), "pad_batch: expected at least one sequence, got none");
  const auto batch = static_cast<int64_t>(sequences.size());
  int64_t longest = 0;
  for (const auto& s : sequences) {
    TORCH_CHECK(!s.empty(), "pad_batch: expected non-empty sequences, got an empty one");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(s.size()));
  }
  auto ids = torch::full({batch, longest}, pad, torch::kInt64);
  auto lengths = torch::empty({batch}, torch::kInt64);
  auto* p = ids.data_ptr<int64_t>();
  auto* l = lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const auto& s = sequences[static_cast<size_t>(b)];
    std::copy(s.begin(), s.end(), p + b * longest);
    l[b] = static_cast<int64_t>(s.size());
  }
  auto mask = torch::arange(longest, torch::kInt64).unsqueeze(0) < lengths.unsqueeze(1);
  return {ids, lengths, mask};
}

bool truncate(std::vector<int64_t>& ids, int64_t max_length) {
  if (max_length <= 0 || static_cast<int64_t>(ids.size()) <= max_length) return false;
  ids.resize(static_cast<size_t>(max_length));
  return true;
}

namespace {

void cut(const std::vector<int64_t>& order, const std::vector<int64_t>& lengths,
         const BucketOptions& options, std::vector<std::vector<int64_t>>& out) {
  std::vector<int64_t> batch;
  int64_t longest = 0;
  for (const int64_t i : order) {
    const int64_t len = std::max<int64_t>(1, lengths[static_cast<size_t>(i)]);
    bool full;
    if (options.max_tokens > 0)
      full = !batch.empty() &&
             std::max(longest, len) * static_cast<int64_t>(batch.size() + 1) > options.max_tokens;
    else
      full = static_cast<int64_t>(batch.size()) >= options.batch_size;
    if (full) {
      out.push_back(std::move(batch));
      batch.clear();
      longest = 0;
    }
    batch.push_back(i);
    longest = std::max(longest, len);
  }
  if (!batch.empty()) out.push_back(std::move(batch));
}

}  // namespace

std::vector<std::vector<int64_t>> bucket_batches(const std::vector<int64_t>& lengths,
                                                 const BucketOptions& options, uint64_t seed,
                                                 int64_t epoch) {
  TORCH_CHECK(options.batch_size > 0, "bucket_batches: batch_size must be > 0, got ",
              options.batch_size);
  TORCH_CHECK(options.chunk_batches > 0, "bucket_batches: chunk_batches must be > 0, got ",
              options.chunk_batches);
  std::vector<int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  DataRng rng(seed * 0x100000001B3ull + static_cast<uint64_t>(epoch) + 1);
  if (options.shuffle) rng.shuffle(order);
  const auto chunk = static_cast<size_t>(options.chunk_batches * options.batch_size);
  std::vector<std::vector<int64_t>> batches;
  for (size_t start = 0; start < order.size(); start += chunk) {
    std::vector<int64_t> part(order.begin() + static_cast<std::ptrdiff_t>(start),
                              order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), start + chunk)));
    if (options.shuffle)
      std::stable_sort(part.begin(), part.end(), [&](int64_t a, int64_t b) {
        return lengths[static_cast<size_t>(a)] < lengths[static_cast<size_t>(b)];
      });
    cut(part, lengths, options, batches);
  }
  if (options.shuffle) rng.shuffle(batches);
  return batches;
}

std::vector<std::vector<int64_t>> sorted_batches(const std::vector<int64_t>& lengths,
                                                 int64_t batch_size) {
  TORCH_CHECK(batch_size > 0, "sorted_batches: batch_size must be > 0, got ", batch_size);
  std::vector<int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return lengths[static_cast<size_t>(a)] > lengths[static_cast<size_t>(b)];
  });
  BucketOptions options;
  options.batch_size = batch_size;
  std::vector<std::vector<int64_t>> batches;
  cut(order, lengths, options, batches);
  return batches;
}

}  // namespace cellstate
