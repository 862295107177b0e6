#pragma once
// A caching allocator for LibTorch's large CPU tensors.
//
// Every fresh page a process touches is a page fault, and in this VM a fault
// costs about 10 µs (the hypervisor takes each one). glibc serves a block of
// 32 MB or more (its largest mmap threshold) with a fresh mmap() that is
// faulted in page by page and unmapped at free(): translate's output layer
// at batch 64 (logits, log-probabilities and their gradient, [64·T, 8000]
// float32, 2 MB a target position) made and dropped several such blocks a
// step, 10,000-24,000 faults a step in all, 15-35% of its training time.
//
// This allocator keeps the blocks of tensors of `min_bytes` or more when they
// are freed and hands them out again:
//   - a request of n bytes is rounded up to 64 KiB (2 MiB from 2 MiB on),
//     and takes the smallest cached block of at least that size when that
//     block is at most a quarter larger (of several such, the most recently
//     freed, whose pages are likeliest to be in the CPU's caches); otherwise
//     a new block is mapped
//     (2 MiB-aligned from 2 MiB on, and advised as transparent huge pages,
//     so the kernel faults it in 2 MiB at a time where it can);
//   - freed blocks are kept while the cache holds at most `max_cached_bytes`;
//     beyond that the least recently freed are unmapped;
//   - smaller requests go to the allocator that was installed before
//     (LibTorch's, glibc's malloc).
// Memory in use is therefore what the tensors hold plus at most
// max_cached_bytes of free blocks (plus the rounding).

#include <torch/arg.h>

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <unordered_map>

namespace cellstate {

struct CachingAllocatorOptions {
  /// Tensors of at least this many bytes are served from cached blocks.
  TORCH_ARG(size_t, min_bytes) = size_t{1} << 20;  // 1 MiB
  /// Free blocks kept for reuse, at most this many bytes in all.
  TORCH_ARG(size_t, max_cached_bytes) = size_t{1} << 30;  // 1 GiB
};

/// What the caching allocator has done in this process.
struct CachingAllocatorStats {
  bool installed = false;
  int64_t hits = 0;          // requests served from a cached block
  int64_t maps = 0;          // requests that mapped a new block
  int64_t unmaps = 0;        // blocks returned to the system (cache full)
  int64_t live_bytes = 0;    // bytes of blocks held by tensors now
  int64_t cached_bytes = 0;  // bytes of free blocks kept now
};

/// The cache itself, apart from LibTorch (the allocator installed below owns
/// one; tests make their own). Thread-safe.
class BlockCache {
 public:
  explicit BlockCache(const CachingAllocatorOptions& options = {});
  ~BlockCache();  // unmaps the cached blocks (blocks still taken stay mapped)
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  /// A block of at least n bytes (n >= 1), 64-byte aligned or better: a
  /// cached one or a new mapping. Throws c10::Error when none can be mapped.
  void* take(size_t n);
  /// Caches block p (unmapping the least recently freed blocks past
  /// max_cached_bytes); false, changing nothing, when p was not taken here.
  bool give_back(void* p);
  /// The size of the blocks a request of n bytes gets.
  static size_t block_size(size_t n);

  const CachingAllocatorOptions& options() const { return options_; }
  CachingAllocatorStats stats() const;

 private:
  struct FreeBlock {
    void* data;
    size_t size;
  };
  using Order = std::list<FreeBlock>;  // least recently freed first
  FreeBlock pop_oldest();              // mutex_ held
  void drop_cache();

  CachingAllocatorOptions options_;
  mutable std::mutex mutex_;
  Order order_;
  std::multimap<size_t, Order::iterator> by_size_;
  std::unordered_map<void*, size_t> live_;
  CachingAllocatorStats stats_;
};

/// Makes the caching allocator LibTorch's CPU allocator, once per process:
/// later calls change nothing and return false. Tensors allocated before
/// keep their own allocator's deleter, so they are freed as they were made.
bool install_caching_cpu_allocator(const CachingAllocatorOptions& options = {});

/// The caching allocator's counters (all zero and installed = false before
/// it is installed).
CachingAllocatorStats caching_allocator_stats();

}  // namespace cellstate
