// CPU reference clamped SwiGLU (see swiglu_ref.h).
#include "ops/cpu/swiglu_ref.h"

#include <algorithm>
#include <cmath>

namespace fp4moe::cpu {

void swiglu_clamped(const float* gate_up, int64_t rows, int64_t inter, float limit, ActDType dt, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* gu = gate_up + r * 2 * inter;
    for (int64_t i = 0; i < inter; ++i) {
      const float g = std::min(gu[i], limit);
      const float u = std::clamp(gu[inter + i], -limit, limit);
      const float silu = round_act(g / (1.0f + std::exp(-g)), dt);
      out[r * inter + i] = round_act(silu * u, dt);
    }
  }
}

}  // namespace fp4moe::cpu
