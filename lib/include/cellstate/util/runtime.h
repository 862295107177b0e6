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
/// before any tensor work.
int configure_threads(int requested);

/// cellstate's version ("0.1.0"), as the project's CMakeLists.txt sets it.
std::string version();

/// The BLAS library loaded in this process (its path), for logs.
std::string blas_info();

}  // namespace cellstate
