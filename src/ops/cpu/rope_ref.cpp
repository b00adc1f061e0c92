// CPU reference RoPE (see rope_ref.h).
#include "ops/cpu/rope_ref.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>

namespace fp4moe::cpu {

std::vector<float> rope_inv_freq_default(double theta, int64_t rope_dim) {
  if (rope_dim <= 0 || rope_dim % 2 != 0) throw std::invalid_argument("rope: rope_dim must be positive and even");
  std::vector<float> f(static_cast<size_t>(rope_dim / 2));
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(rope_dim);
    f[static_cast<size_t>(i)] = 1.0f / std::pow(static_cast<float>(theta), e);
  }
  return f;
}

std::vector<float> rope_inv_freq_yarn(double theta, int64_t rope_dim, const YarnParams& y) {
  const std::vector<float> extra = rope_inv_freq_default(theta, rope_dim);
  const int64_t half = rope_dim / 2;
  auto correction_dim = [&](double rotations) {
    return (double(rope_dim) * std::log(y.original_max_position / (rotations * 2.0 * std::numbers::pi))) /
           (2.0 * std::log(theta));
  };
  double lo = correction_dim(y.beta_fast), hi = correction_dim(y.beta_slow);
  if (y.truncate) {
    lo = std::floor(lo);
    hi = std::ceil(hi);
  }
  lo = std::max(lo, 0.0);
  hi = std::min(hi, double(rope_dim - 1));
  if (lo == hi) hi += 0.001;
  std::vector<float> f(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float ramp = std::clamp(static_cast<float>((double(i) - lo) / (hi - lo)), 0.0f, 1.0f);
    const float extrapolation = 1.0f - ramp;
    const float pos_freq = std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(rope_dim));
    const float interp = 1.0f / (static_cast<float>(y.factor) * pos_freq);
    f[static_cast<size_t>(i)] = interp * (1.0f - extrapolation) + extra[static_cast<size_t>(i)] * extrapolation;
  }
  return f;
}

void rope_apply(float* x, int64_t heads, int64_t head_dim, int64_t rope_dim, const float* inv_freq, int64_t pos,
                bool inverse, ActDType dt) {
  const int64_t half = rope_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float phi = static_cast<float>(pos) * inv_freq[i];
    const float c = round_act(std::cos(phi), dt);
    float s = round_act(std::sin(phi), dt);
    if (inverse) s = -s;
    for (int64_t h = 0; h < heads; ++h) {
      float* r = x + h * head_dim + (head_dim - rope_dim);
      const float a = r[2 * i], b = r[2 * i + 1];
      r[2 * i] = round_act(a * c - b * s, dt);
      r[2 * i + 1] = round_act(b * c + a * s, dt);
    }
  }
}

}  // namespace fp4moe::cpu
