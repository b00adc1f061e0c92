// CPU reference clamped SwiGLU of DeepSeek-V4 (spec section 8), on fused [gate | up] rows:
//   g <- min(g, limit)  (no lower clamp),  u <- clamp(u, -limit, limit)
//   a  = rd(rd(silu(g)) * u)
#pragma once

#include <cstdint>

#include "ops/cpu/act_dtype.h"

namespace fp4moe::cpu {

// gate_up: [rows, 2*inter] (gate in columns [0, inter)); out: [rows, inter].
void swiglu_clamped(const float* gate_up, int64_t rows, int64_t inter, float limit, ActDType dt, float* out);

}  // namespace fp4moe::cpu
