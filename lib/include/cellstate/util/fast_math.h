#pragma once
// Elementwise math for the hand-written kernels (internal: nn/'s recurrent
// kernels and loss, decode/'s top_log_probs).

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace cellstate::detail {

/// exp for float, branch-free (Cephes polynomial, about 2 ulp) so that the
/// compiler vectorises the loops that call it; inputs are clamped to the
/// range where exp is finite and normal.
inline float fast_exp(float x) {
  x = std::min(88.3762626647949f, std::max(-87.3365447504f, x));
  // Round to nearest by the 1.5·2²³ trick (vectorises without -ffast-math).
  float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - fx * 0.693359375f + fx * 2.12194440e-4f;
  float r2 = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r2 + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

}  // namespace cellstate::detail
