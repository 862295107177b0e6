// Fixture of check_vectorised.py's self-test: the loop in bad() is the
// pattern that ran scalar in nn/dropout.cpp once the file was compiled with
// -fopenmp (captures reached through the outlined region's pointer, a store
// through `out` that might change `scale`); good() is the fix (locals).
#include <cstdint>
template <class F> void run(int64_t n, const F& f) {
#pragma omp parallel
  { f(0, n); }
}
void bad(float* out, int64_t n, float scale) {
  run(n, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) out[i] = (static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ULL >> 40) < 7000000 ? scale : 0.0f;
  });
}
void good(float* out, int64_t n, float scale) {
  run(n, [&](int64_t b, int64_t e) {
    float* __restrict__ o = out;
    const float s = scale;
#pragma omp simd
    for (int64_t i = b; i < e; ++i) o[i] = (static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ULL >> 40) < 7000000 ? s : 0.0f;
  });
}
