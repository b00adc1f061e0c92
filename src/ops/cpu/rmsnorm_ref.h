// CPU reference RMSNorm in the two forms DeepSeek-V4 uses (spec sections 4, 5, 9).
//
// Weighted (every learned norm):   n = x * rsqrt(mean(x^2) + eps)   (fp32 statistics)
//                                  out = rd(rd(n) * weight)
//   n is rounded to the activation dtype BEFORE the weight multiplies it; that is the
//   transformers order (the DeepSeek reference multiplies in fp32 and rounds once).
// Unweighted (per-head q norm, mHC input norm):
//                                  f = rd(rsqrt(mean(x^2) + eps));  out = rd(x * f)
//   With dt = kF32 this is the all-fp32 norm the hyper-connections use.
// The mean of squares is accumulated in fp64 so the result does not depend on summation order.
#pragma once

#include <cstdint>

#include "ops/cpu/act_dtype.h"

namespace fp4moe::cpu {

// x, out: [rows, dim] (out may alias x); weight: [dim].
void rmsnorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, ActDType dt, float* out);
void rmsnorm_unweighted(const float* x, int64_t rows, int64_t dim, float eps, ActDType dt, float* out);

}  // namespace fp4moe::cpu
