#pragma once
// Process-wide runtime settings every executable applies at start.

#include <string>

namespace cellstate {

/// Sets the number of intra-op threads LibTorch (and OpenBLAS through OpenMP)
/// uses: `requested` if positive, otherwise every core of the machine.
/// Returns the number set. libgomp here starts with one thread, so every
/// executable calls this before any tensor work.
int configure_threads(int requested);

/// The BLAS library loaded in this process (its path), for logs.
std::string blas_info();

}  // namespace cellstate
