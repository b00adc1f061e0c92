// CPU reference MoE routers (see router_ref.h).
#include "ops/cpu/router_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

namespace fp4moe::cpu {

void router_scores_sqrtsoftplus(const float* logits, int64_t n, ActDType dt, float* scores) {
  for (int64_t e = 0; e < n; ++e) {
    const float x = logits[e];
    const float sp = round_act(x > 20.0f ? x : std::log1p(std::exp(x)), dt);
    scores[e] = round_act(std::sqrt(sp), dt);
  }
}

void router_topk(const float* scores, const float* bias, int64_t n_experts, int64_t k, ActDType dt, int32_t* idx) {
  if (k > n_experts || k <= 0) throw std::invalid_argument("router: top-k must be in [1, n_experts]");
  std::vector<float> key(static_cast<size_t>(n_experts));
  // A NaN key (a NaN logit from an overflowed activation) ranks below every other, as -inf:
  // compared as NaN it would break the sort's ordering (undefined behaviour).
  for (int64_t e = 0; e < n_experts; ++e) {
    const float k_e = round_act(scores[e] + (bias ? bias[e] : 0.0f), dt);
    key[static_cast<size_t>(e)] = std::isnan(k_e) ? -std::numeric_limits<float>::infinity() : k_e;
  }
  std::vector<int32_t> order(static_cast<size_t>(n_experts));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return key[static_cast<size_t>(a)] > key[static_cast<size_t>(b)]; });
  std::copy(order.begin(), order.begin() + k, idx);
}

void router_weights(const float* scores, const int32_t* idx, int64_t k, float routed_scaling_factor, ActDType dt,
                    float* weights) {
  float sum = 0.0f;
  for (int64_t i = 0; i < k; ++i) sum += scores[idx[i]];
  const float denom = round_act(round_act(sum, dt) + 1e-20f, dt);
  for (int64_t i = 0; i < k; ++i)
    weights[i] = round_act(round_act(scores[idx[i]] / denom, dt) * routed_scaling_factor, dt);
}

}  // namespace fp4moe::cpu
