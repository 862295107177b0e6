#pragma once
// Process-wide runtime settings every executable applies at start.

#include <string>

namespace cellstate {

/// Cores not busy with other work now: the machine's cores times the share
/// of CPU time that was idle over the last `sample_ms` milliseconds
/// (/proc/stat), rounded, at least 1; every core when it cannot be read.
int idle_cores(int sample_ms = 100);

/// Sets the number of intra-op threads LibTorch (and OpenBLAS through OpenMP)
/// uses: `requested` if positive; otherwise (auto) OMP_NUM_THREADS when it is
/// set to a count, else the idle cores, so that on
/// a machine busy with other work the threads do not wait on each other
/// behind it (OpenMP threads spin while they wait: measured here, two threads
/// beside one busy process were 2.8x slower than one). Returns the number
/// set. libgomp here starts with one thread, so every executable calls this
/// before any tensor work (it also calls configure_allocator()).
int configure_threads(int requested);

/// glibc's malloc serves a block over its mmap threshold (128 KB at start,
/// raised only as such blocks are freed) with a fresh mmap(), every page of
/// it faulted in and zeroed on first use, and returned at free(). A training
/// step's tensors of a few hundred kilobytes to a few megabytes paid that on
/// every step until some larger block happened to be freed: measured here,
/// NER training on 2 ranks ran its first epoch at 81 ms a step instead of 38
/// (a rank's first dev evaluation or checkpoint freed such a block and
/// raised the threshold). Sets the mmap threshold to 32 MB and the trim
/// threshold to 64 MB, unless the environment sets MALLOC_MMAP_THRESHOLD_ or
/// MALLOC_TRIM_THRESHOLD_ (glibc's own tunables). Blocks of 32 MB and more
/// are always fresh mmaps in glibc; LibTorch's tensors of 1 MB and more
/// therefore come from the caching allocator (util/allocator.h), which keeps
/// up to 1 GB of freed blocks for reuse: translate's training steps went
/// from 10,000-24,000 page faults each to almost none (fp32 1.47x, bf16
/// 1.68x the steps a second). CELLSTATE_CPU_CACHE_MB sets that limit in
/// megabytes (0: no caching allocator; anything but a whole number >= 0
/// throws std::invalid_argument). configure_threads calls it.
void configure_allocator();

/// cellstate's version ("0.1.0"), as the project's CMakeLists.txt sets it.
std::string version();

/// The BLAS library loaded in this process (its path), for logs.
std::string blas_info();

}  // namespace cellstate
