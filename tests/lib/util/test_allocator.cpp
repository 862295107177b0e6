#include "cellstate/util/allocator.h"
#include "cellstate/util/runtime.h"

#include <gtest/gtest.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace cellstate {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(BlockCache, ReusesFreedBlocksOfAboutTheSizeAsked) {
  BlockCache cache;
  EXPECT_EQ(BlockCache::block_size(1), size_t{64} << 10);
  EXPECT_EQ(BlockCache::block_size(kMiB + 1), kMiB + (size_t{64} << 10));
  EXPECT_EQ(BlockCache::block_size(3 * kMiB), 4 * kMiB);  // 2 MiB grain from 2 MiB on

  void* a = cache.take(3 * kMiB);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % (2 * kMiB), 0u) << "huge-page blocks are 2 MiB-aligned";
  std::memset(a, 1, 4 * kMiB);  // the whole rounded block is usable
  EXPECT_EQ(cache.stats().live_bytes, static_cast<int64_t>(4 * kMiB));

  EXPECT_TRUE(cache.give_back(a));
  EXPECT_EQ(cache.stats().cached_bytes, static_cast<int64_t>(4 * kMiB));
  EXPECT_EQ(cache.stats().live_bytes, 0);
  EXPECT_EQ(cache.take(3 * kMiB + 12345), a) << "the same rounded size reuses the block";
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_TRUE(cache.give_back(a));

  // A much smaller request does not take the 4 MiB block; a quarter larger does.
  void* small = cache.take(kMiB);
  EXPECT_NE(small, a);
  EXPECT_EQ(cache.stats().maps, 2);
  EXPECT_TRUE(cache.give_back(small));
  EXPECT_EQ(cache.take(BlockCache::block_size(3 * kMiB + kMiB / 2)), a);  // 4 MiB asked, 4 MiB block
  EXPECT_TRUE(cache.give_back(a));

  int on_stack = 0;
  EXPECT_FALSE(cache.give_back(&on_stack)) << "a pointer not taken from the cache is not taken back";
  EXPECT_FALSE(cache.give_back(a)) << "a block given back twice";
  EXPECT_THROW(cache.take(0), c10::Error);
}

TEST(BlockCache, UnmapsTheLeastRecentlyFreedBlocksPastItsLimit) {
  BlockCache cache(CachingAllocatorOptions().max_cached_bytes(5 * kMiB));
  void* a = cache.take(2 * kMiB);
  void* b = cache.take(2 * kMiB);
  void* c = cache.take(2 * kMiB);
  EXPECT_TRUE(cache.give_back(a));
  EXPECT_TRUE(cache.give_back(b));
  EXPECT_EQ(cache.stats().unmaps, 0);
  EXPECT_TRUE(cache.give_back(c));  // 6 MiB cached > 5: a, the oldest, goes
  EXPECT_EQ(cache.stats().unmaps, 1);
  EXPECT_EQ(cache.stats().cached_bytes, static_cast<int64_t>(4 * kMiB));
  void* first = cache.take(2 * kMiB);
  void* second = cache.take(2 * kMiB);
  EXPECT_TRUE((first == b && second == c) || (first == c && second == b));
  EXPECT_EQ(cache.stats().hits, 2);
  void* third = cache.take(2 * kMiB);  // the cache is empty: a new mapping
  EXPECT_EQ(cache.stats().maps, 4);
  for (void* p : {first, second, third}) EXPECT_TRUE(cache.give_back(p));
}

TEST(CachingAllocator, ServesLibTorchsLargeTensorsFromFreedBlocks) {
  install_caching_cpu_allocator();  // each test runs in a process of its own; a second call changes nothing
  EXPECT_FALSE(install_caching_cpu_allocator());
  ASSERT_TRUE(caching_allocator_stats().installed);

  const auto before = caching_allocator_stats();
  void* first = nullptr;
  {
    auto big = torch::ones({int64_t{1} << 20});  // 4 MiB
    first = big.data_ptr();
    EXPECT_EQ(big.sum().item<float>(), static_cast<float>(int64_t{1} << 20));
    EXPECT_EQ(caching_allocator_stats().live_bytes - before.live_bytes, static_cast<int64_t>(4 * kMiB));
  }
  auto again = torch::zeros({1024, 1024});
  EXPECT_EQ(again.data_ptr(), first) << "the freed block serves the next tensor of its size";
  EXPECT_EQ(again.abs().sum().item<float>(), 0.0f) << "torch::zeros still zeroes a reused block";
  EXPECT_GE(caching_allocator_stats().hits, before.hits + 1);

  const auto mid = caching_allocator_stats();
  auto small = torch::ones({1000});  // below min_bytes: the allocator it replaced
  EXPECT_EQ(caching_allocator_stats().maps, mid.maps);
  EXPECT_EQ(caching_allocator_stats().hits, mid.hits);

  // raw_allocate / raw_deallocate (LibTorch's untyped buffers), small and large.
  auto* allocator = c10::GetCPUAllocator();
  for (size_t n : {size_t{100}, 3 * kMiB}) {
    void* p = allocator->raw_allocate(n);
    ASSERT_NE(p, nullptr);
    std::memset(p, 7, n);
    allocator->raw_deallocate(p);
  }
}

TEST(CachingAllocator, EnvironmentSettingIsChecked) {
  const bool was_installed = caching_allocator_stats().installed;  // by another test of this process
  ::setenv("CELLSTATE_CPU_CACHE_MB", "12x", 1);
  EXPECT_THROW(configure_allocator(), std::invalid_argument);
  ::setenv("CELLSTATE_CPU_CACHE_MB", "-1", 1);
  EXPECT_THROW(configure_allocator(), std::invalid_argument);
  ::setenv("CELLSTATE_CPU_CACHE_MB", "0", 1);  // off
  configure_allocator();
  EXPECT_EQ(caching_allocator_stats().installed, was_installed) << "0 installs nothing";
  ::unsetenv("CELLSTATE_CPU_CACHE_MB");
  configure_allocator();
  EXPECT_TRUE(caching_allocator_stats().installed);
}

}  // namespace
}  // namespace cellstate
