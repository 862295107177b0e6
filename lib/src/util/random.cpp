#include "cellstate/util/random.h"

namespace cellstate {

namespace {
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
}  // namespace

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

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
