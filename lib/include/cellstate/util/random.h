#pragma once
// Deterministic random numbers for data order, sampling and seeds derived
// from --seed: splitmix64, independent of the standard library's
// distributions, so the same seed gives the same run on every platform.

#include <cstdint>
#include <utility>
#include <vector>

namespace cellstate {

/// splitmix64's increment, 2^64 / golden ratio.
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

/// splitmix64's finaliser (Steele, Lea & Flood 2014): a well-mixed 64-bit
/// hash of `z`, a bijection. Inline, so that loops over it vectorise
/// (nn/dropout.h's masks).
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// The seed of one independent random stream derived from a run's `seed`:
/// mix64(seed * φ + stream), φ = 2^64 / golden ratio. Streams are numbered
/// by what they are for (an epoch, a batch, an input row), so every part of a
/// run draws its own numbers, the same ones again after a resume.
uint64_t derive_seed(uint64_t seed, uint64_t stream);

/// A small deterministic generator (splitmix64).
class DataRng {
 public:
  explicit DataRng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  /// Uniform in [0, n).
  uint64_t below(uint64_t n);
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  uint64_t state_;
};

}  // namespace cellstate
