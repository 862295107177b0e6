#include "cellstate/util/random.h"

namespace cellstate {

uint64_t derive_seed(uint64_t seed, uint64_t stream) { return mix64(seed * kGolden + stream); }

uint64_t DataRng::next() { return mix64(state_ += kGolden); }

uint64_t DataRng::below(uint64_t n) {
  // Rejection sampling: no modulo bias.
  const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % n);
  for (;;) {
    const uint64_t x = next();
    if (x < limit) return x % n;
  }
}

}  // namespace cellstate
