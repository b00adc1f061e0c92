// CPU reference attention with sinks for one query position over a gathered key list, as
// DeepSeek-V4 uses it (spec section 5): many query heads, ONE shared head that is both K and V,
// and a learned per-head sink logit that joins the softmax as an extra column and is dropped.
//
//   l_j = rd(rd(q_h . k_j) * scale)                  (logits in the activation dtype)
//   M   = max(l, sink_h);  c_j = rd(l_j - M), c_s = rd(sink_h - M)
//   P_j = rd(exp(c_j) / (sum_k exp(c_k) + exp(c_s)))
//   o_h = rd(sum_j P_j v_j)                          (fp32 accumulation)
//
// Masking is done by the caller: only visible keys are passed. A masked slot contributes an
// exact zero in the reference (its logit is finfo.min or -inf), so leaving it out is identical.
#pragma once

#include <cstdint>

#include "ops/cpu/act_dtype.h"

namespace fp4moe::cpu {

// q: [heads, dim]; keys: nkeys pointers to [dim] vectors (K = V); sinks: [heads];
// out: [heads, dim]. nkeys may be 0 (the output is then zero: all mass on the sink).
void attention_with_sinks(const float* q, int64_t heads, int64_t dim, const float* const* keys, int64_t nkeys,
                          const float* sinks, float scale, ActDType dt, float* out);

}  // namespace fp4moe::cpu
