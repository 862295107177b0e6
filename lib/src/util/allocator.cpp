#include "cellstate/util/allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>
#include <vector>

#include <sys/mman.h>

namespace cellstate {

namespace {

constexpr size_t kSmallGrain = size_t{64} << 10;  // 64 KiB
constexpr size_t kHugePage = size_t{2} << 20;     // 2 MiB

/// A new anonymous mapping of `size` bytes (a multiple of 64 KiB); from
/// 2 MiB on aligned to 2 MiB and advised as transparent huge pages. Null
/// when the system refuses.
void* map_block(size_t size) {
  const bool huge = size >= kHugePage;
  const size_t extra = huge ? kHugePage : 0;
  void* raw = ::mmap(nullptr, size + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  auto* base = static_cast<char*>(raw);
  if (huge) {
    const size_t head = (kHugePage - reinterpret_cast<uintptr_t>(base) % kHugePage) % kHugePage;
    if (head > 0) ::munmap(base, head);
    if (extra > head) ::munmap(base + head + size, extra - head);
    base += head;
    ::madvise(base, size, MADV_HUGEPAGE);  // advice only: without THP the block is still usable
  }
  return base;
}

}  // namespace

BlockCache::BlockCache(const CachingAllocatorOptions& options) : options_(options) {
  TORCH_CHECK(options.min_bytes() >= 1, "BlockCache: min_bytes must be >= 1, got ", options.min_bytes());
}

BlockCache::~BlockCache() { drop_cache(); }

size_t BlockCache::block_size(size_t n) {
  const size_t grain = n >= kHugePage ? kHugePage : kSmallGrain;
  return (n + grain - 1) / grain * grain;
}

void* BlockCache::take(size_t n) {
  TORCH_CHECK(n >= 1, "BlockCache::take: expected at least 1 byte, got 0");
  const size_t size = block_size(n);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = by_size_.lower_bound(size);
    if (it != by_size_.end() && it->first <= size + size / 4) {
      // Of the blocks of that size, the most recently freed: its pages are
      // the likeliest to be in the CPU's caches still.
      it = std::prev(by_size_.upper_bound(it->first));
      const FreeBlock block = *it->second;
      order_.erase(it->second);
      by_size_.erase(it);
      stats_.cached_bytes -= static_cast<int64_t>(block.size);
      stats_.live_bytes += static_cast<int64_t>(block.size);
      ++stats_.hits;
      live_.emplace(block.data, block.size);
      return block.data;
    }
  }
  void* p = map_block(size);
  if (p == nullptr) {  // out of memory or address space: return the cache and try once more
    drop_cache();
    p = map_block(size);
  }
  TORCH_CHECK(p != nullptr, "cannot allocate ", n, " bytes for a CPU tensor: ", std::strerror(errno));
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.maps;
  stats_.live_bytes += static_cast<int64_t>(size);
  live_.emplace(p, size);
  return p;
}

bool BlockCache::give_back(void* p) {
  std::vector<FreeBlock> evicted;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto live = live_.find(p);
    if (live == live_.end()) return false;
    const size_t size = live->second;
    live_.erase(live);
    stats_.live_bytes -= static_cast<int64_t>(size);
    order_.push_back({p, size});
    by_size_.emplace(size, std::prev(order_.end()));
    stats_.cached_bytes += static_cast<int64_t>(size);
    while (static_cast<size_t>(stats_.cached_bytes) > options_.max_cached_bytes()) evicted.push_back(pop_oldest());
  }
  for (const auto& block : evicted) ::munmap(block.data, block.size);
  return true;
}

BlockCache::FreeBlock BlockCache::pop_oldest() {
  const FreeBlock block = order_.front();
  auto range = by_size_.equal_range(block.size);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second == order_.begin()) {
      by_size_.erase(it);
      break;
    }
  }
  order_.pop_front();
  stats_.cached_bytes -= static_cast<int64_t>(block.size);
  ++stats_.unmaps;
  return block;
}

void BlockCache::drop_cache() {
  std::vector<FreeBlock> evicted;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (!order_.empty()) evicted.push_back(pop_oldest());
  }
  for (const auto& block : evicted) ::munmap(block.data, block.size);
}

CachingAllocatorStats BlockCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

namespace {

/// LibTorch's CPU allocator over a BlockCache: requests of min_bytes or
/// more from the cache, smaller ones from the allocator it replaced. The
/// data pointer is its own context (as LibTorch's raw_allocate requires),
/// so the deleter finds the block by address.
class CachingCpuAllocator final : public c10::Allocator {
 public:
  CachingCpuAllocator(c10::Allocator* fallback, const CachingAllocatorOptions& options)
      : fallback_(fallback), fallback_deleter_(fallback->raw_deleter()), cache_(options) {}

  /// The one instance, once installed. It is never destroyed: tensors that
  /// hold its blocks may be freed at any time up to the process's exit.
  static std::atomic<CachingCpuAllocator*>& instance() {
    static std::atomic<CachingCpuAllocator*> the{nullptr};
    return the;
  }

  c10::DataPtr allocate(size_t n) const override {
    if (n < cache_.options().min_bytes()) return fallback_->allocate(n);
    void* p = cache_.take(n);
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  CachingAllocatorStats stats() const {
    auto s = cache_.stats();
    s.installed = true;
    return s;
  }

 private:
  /// Blocks of the cache go back to it; anything else (raw_deallocate of a
  /// small block) to the replaced allocator's deleter.
  static void release(void* p) {
    if (p == nullptr) return;
    auto* self = instance().load();
    if (!self->cache_.give_back(p)) self->fallback_deleter_(p);
  }

  c10::Allocator* fallback_;
  c10::DeleterFnPtr fallback_deleter_;
  mutable BlockCache cache_;
};

}  // namespace

bool install_caching_cpu_allocator(const CachingAllocatorOptions& options) {
  static std::mutex installing;
  std::lock_guard<std::mutex> lock(installing);
  auto& the = CachingCpuAllocator::instance();
  if (the.load() != nullptr) return false;
  auto* allocator = new CachingCpuAllocator(c10::GetCPUAllocator(), options);  // never deleted (see instance())
  the.store(allocator);
  c10::SetCPUAllocator(allocator, /*priority=*/std::numeric_limits<uint8_t>::max());
  return true;
}

CachingAllocatorStats caching_allocator_stats() {
  const auto* allocator = CachingCpuAllocator::instance().load();
  return allocator != nullptr ? allocator->stats() : CachingAllocatorStats{};
}

}  // namespace cellstate
