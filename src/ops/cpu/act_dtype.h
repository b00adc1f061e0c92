// The activation dtype a reference op emulates. Every op computes in fp32 (fp64 for some
// reductions) and rounds its outputs to the model dtype where the reference implementation
// (transformers, see shared/reference/deepseek_v4.md section 11) rounds. kF32 rounds nowhere,
// which is how parity with an fp32 oracle reaches cosine 0.99999; kBF16 reproduces an all-bf16
// model step by step.
#pragma once

#include <cstdint>

#include "formats/codecs.h"

namespace fp4moe::cpu {

enum class ActDType : uint8_t { kF32, kBF16 };

inline const char* to_string(ActDType dt) { return dt == ActDType::kBF16 ? "bf16" : "fp32"; }

// One value rounded to the activation dtype.
inline float round_act(float x, ActDType dt) { return dt == ActDType::kBF16 ? round_to_bf16(x) : x; }

inline void round_act(float* x, int64_t n, ActDType dt) {
  if (dt == ActDType::kF32) return;
  for (int64_t i = 0; i < n; ++i) x[i] = round_to_bf16(x[i]);
}

}  // namespace fp4moe::cpu
