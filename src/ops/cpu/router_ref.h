// CPU reference MoE routers of DeepSeek-V4 (spec section 8).
//
// Scores: s = sqrt(softplus(logit)) (torch softplus: beta 1, linear above 20), each step
// rounded to the activation dtype (transformers keeps the router in the model dtype).
// Scored routing ("noaux_tc"): the k experts with the largest s + bias (the bias chooses but
// never weights). Hash routing: the k experts tid2eid[token]. Both weight the chosen experts by
//   w = s[idx] / (sum s[idx] + 1e-20) * routed_scaling_factor
// Selection is deterministic: equal keys go to the lower expert index. torch leaves tie order to
// the implementation; its CUDA topk takes the lowest indices among keys equal to the k-th (the
// same set as here), its CPU topk (nth_element) may not. Ties are measure-zero in fp32 but not
// in bf16: rounded keys tie at the top-k boundary on about 1% of tokens (8 experts, top 2).
#pragma once

#include <cstdint>

#include "ops/cpu/act_dtype.h"

namespace fp4moe::cpu {

// scores[n] from logits[n] (may alias).
void router_scores_sqrtsoftplus(const float* logits, int64_t n, ActDType dt, float* scores);
// idx[k]: the k largest rd(scores + bias) (bias may be null), in descending order; a NaN key
// ranks as -inf (ties, among them, to the lower index).
void router_topk(const float* scores, const float* bias, int64_t n_experts, int64_t k, ActDType dt, int32_t* idx);
// weights[k] for the chosen experts.
void router_weights(const float* scores, const int32_t* idx, int64_t k, float routed_scaling_factor, ActDType dt,
                    float* weights);

}  // namespace fp4moe::cpu
