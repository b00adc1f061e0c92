// CPU reference attention with sinks (see attention_ref.h).
#include "ops/cpu/attention_ref.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace fp4moe::cpu {

void attention_with_sinks(const float* q, int64_t heads, int64_t dim, const float* const* keys, int64_t nkeys,
                          const float* sinks, float scale, ActDType dt, float* out) {
  std::vector<float> l(static_cast<size_t>(nkeys));
  std::vector<double> acc(static_cast<size_t>(dim));
  for (int64_t h = 0; h < heads; ++h) {
    const float* qh = q + h * dim;
    float m = sinks[h];
    for (int64_t j = 0; j < nkeys; ++j) {
      float dot = 0.0f;
      for (int64_t k = 0; k < dim; ++k) dot += qh[k] * keys[j][k];
      l[static_cast<size_t>(j)] = round_act(round_act(dot, dt) * scale, dt);
      m = std::max(m, l[static_cast<size_t>(j)]);
    }
    double denom = std::exp(double(round_act(sinks[h] - m, dt)));
    for (int64_t j = 0; j < nkeys; ++j) {
      const float c = round_act(l[static_cast<size_t>(j)] - m, dt);
      l[static_cast<size_t>(j)] = static_cast<float>(std::exp(double(c)));
      denom += l[static_cast<size_t>(j)];
    }
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = 0; j < nkeys; ++j) {
      const float p = round_act(static_cast<float>(l[static_cast<size_t>(j)] / denom), dt);
      for (int64_t k = 0; k < dim; ++k) acc[static_cast<size_t>(k)] += double(p) * keys[j][k];
    }
    for (int64_t k = 0; k < dim; ++k) out[h * dim + k] = round_act(static_cast<float>(acc[static_cast<size_t>(k)]), dt);
  }
}

}  // namespace fp4moe::cpu
