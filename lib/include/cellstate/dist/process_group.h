#pragma once
// Data-parallel training's communication: a group of processes, on one
// machine or several, that train one model together, on PyTorch's own
// distributed engine (c10d's Gloo process group over a TCPStore that rank 0
// hosts). The c10d headers stay in process_group.cpp.
//
//   environment (torchrun's names)      ProcessGroup
//   RANK, WORLD_SIZE, LOCAL_RANK,   ──► rendezvous at MASTER_ADDR:MASTER_PORT
//   LOCAL_WORLD_SIZE, MASTER_ADDR,       (TCPStore on rank 0, Gloo full mesh)
//   MASTER_PORT                     ──► all_reduce_sum / broadcast / all_gather
//
// Every collective must be called by every rank in the same order. A failed
// one (a rank died, the network broke, --dist-timeout passed) throws
// DistributedError naming this rank and the operation.

#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace cellstate {

/// Where this process stands in a run, as torchrun's environment says it.
struct DistributedOptions {
  int64_t rank = 0;              // RANK: 0 .. world_size-1; rank 0 hosts the store and writes the model
  int64_t world_size = 1;        // WORLD_SIZE: processes in the run
  int64_t local_rank = 0;        // LOCAL_RANK: rank among this machine's processes
  int64_t local_world_size = 1;  // LOCAL_WORLD_SIZE: processes on this machine
  std::string master_addr = "127.0.0.1";  // MASTER_ADDR: rank 0's address
  int64_t master_port = 29500;            // MASTER_PORT: the store's TCP port
  double timeout_s = 600;        // how long a rendezvous or a collective may wait

  /// From the environment; a run of one process when WORLD_SIZE is unset.
  /// A malformed or inconsistent variable is a std::invalid_argument naming it.
  static DistributedOptions from_environment(double timeout_s);
  /// Throws std::invalid_argument naming the variable at fault.
  void validate() const;
  bool distributed() const { return world_size > 1; }
};

/// A collective or the rendezvous failed: "rank R of N: WHAT failed: WHY".
class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// [begin, end) of the part of `n` items that shard `rank` of `shards` takes:
/// contiguous, in order, sizes differing by at most one (the first n % shards
/// shards take one more). Empty when n < shards for the last ones.
struct ShardRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};
ShardRange shard_range(int64_t n, int64_t rank, int64_t shards);

/// A handle on the group (copies share it). Default-constructed: a group of
/// one process, where every collective returns at once.
class ProcessGroup {
 public:
  ProcessGroup() = default;
  /// Joins the group `options` describes (for world_size > 1: rank 0 starts
  /// the store, every rank connects to MASTER_ADDR:MASTER_PORT and to each
  /// other). Throws DistributedError when that fails within the timeout.
  explicit ProcessGroup(const DistributedOptions& options);

  int64_t rank() const { return options_.rank; }
  int64_t size() const { return options_.world_size; }
  bool main() const { return options_.rank == 0; }
  bool distributed() const { return options_.world_size > 1; }
  const DistributedOptions& options() const { return options_; }
  /// "rank 1 of 2" (for messages).
  std::string name() const;

  /// Sums each tensor over the ranks, in place (float32, float64 or int64,
  /// contiguous; the same shapes on every rank).
  void all_reduce_sum(std::vector<torch::Tensor>& tensors) const;
  /// Rank `root`'s values into `tensor` on every rank, in place.
  void broadcast(torch::Tensor& tensor, int64_t root = 0) const;
  /// Every rank's `tensor` (the same shape everywhere), in rank order.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) const;
  /// Rank 0's `bytes` on every rank (a file's contents, a decision); through
  /// the store, under a key unique to this call.
  std::string broadcast_bytes(const std::string& bytes) const;
  /// Rank 0's `value` on every rank.
  bool broadcast_flag(bool value) const;
  /// Returns when every rank has called it.
  void barrier() const;

 private:
  friend class GradientExchange;  // hands c10d's group to the Reducer
  struct State;
  DistributedOptions options_;
  std::shared_ptr<State> state_;  // null for a group of one
};

/// Rank 0's file `path` copied to `path` on every other rank (atomically;
/// the ranks may be on other machines). Rank 0 must have the file.
void share_file(const ProcessGroup& group, const std::string& path);

/// Rows `range` of `full` along `dim`: this shard's part of a batch-shaped tensor.
torch::Tensor shard_rows(const torch::Tensor& full, int64_t dim, const ProcessGroup& group);

/// The inverse of shard_rows: every rank's part of a tensor with `n` rows
/// along `dim` put back together, on every rank (a collective).
torch::Tensor gather_rows(const torch::Tensor& part, int64_t dim, int64_t n, const ProcessGroup& group);

}  // namespace cellstate
