// CPU reference mHC (see mhc_ref.h).
#include "ops/cpu/mhc_ref.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/rmsnorm_ref.h"

namespace fp4moe::cpu {
namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// m [rows] = rmsnorm(flatten(X)) . fn^T, in fp32.
std::vector<float> mix_logits(const float* X, int64_t n, int64_t dim, const float* fn, int64_t rows, float norm_eps) {
  std::vector<float> xn(static_cast<size_t>(n * dim));
  rmsnorm_unweighted(X, 1, n * dim, norm_eps, ActDType::kF32, xn.data());
  std::vector<float> m(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0.0;
    for (int64_t k = 0; k < n * dim; ++k) acc += double(xn[static_cast<size_t>(k)]) * fn[r * n * dim + k];
    m[static_cast<size_t>(r)] = static_cast<float>(acc);
  }
  return m;
}
}  // namespace

void sinkhorn(float* c, int64_t n, int iters, float eps) {
  auto cols = [&] {
    for (int64_t j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int64_t i = 0; i < n; ++i) s += c[i * n + j];
      for (int64_t i = 0; i < n; ++i) c[i * n + j] /= (s + eps);
    }
  };
  auto rows = [&] {
    for (int64_t i = 0; i < n; ++i) {
      float s = 0.0f;
      for (int64_t j = 0; j < n; ++j) s += c[i * n + j];
      for (int64_t j = 0; j < n; ++j) c[i * n + j] /= (s + eps);
    }
  };
  cols();
  for (int it = 1; it < iters; ++it) {
    rows();
    cols();
  }
}

void mhc_weights(const float* X, int64_t n, int64_t dim, const float* fn, const float* base, const float* scale,
                 int sinkhorn_iters, float hc_eps, float norm_eps, float* pre, float* post, float* comb) {
  const std::vector<float> m = mix_logits(X, n, dim, fn, (2 + n) * n, norm_eps);
  for (int64_t i = 0; i < n; ++i) {
    pre[i] = sigmoid(m[static_cast<size_t>(i)] * scale[0] + base[i]) + hc_eps;
    post[i] = 2.0f * sigmoid(m[static_cast<size_t>(n + i)] * scale[1] + base[n + i]);
  }
  for (int64_t i = 0; i < n; ++i) {
    float* row = comb + i * n;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      row[j] = m[static_cast<size_t>(2 * n + i * n + j)] * scale[2] + base[2 * n + i * n + j];
      mx = std::max(mx, row[j]);
    }
    float s = 0.0f;
    for (int64_t j = 0; j < n; ++j) s += (row[j] = std::exp(row[j] - mx));
    for (int64_t j = 0; j < n; ++j) row[j] = row[j] / s + hc_eps;
  }
  sinkhorn(comb, n, sinkhorn_iters, hc_eps);
}

void hc_head_weights(const float* X, int64_t n, int64_t dim, const float* fn, const float* base, const float* scale,
                     float hc_eps, float norm_eps, float* pre) {
  const std::vector<float> m = mix_logits(X, n, dim, fn, n, norm_eps);
  for (int64_t i = 0; i < n; ++i) pre[i] = sigmoid(m[static_cast<size_t>(i)] * scale[0] + base[i]) + hc_eps;
}

void mhc_collapse(const float* X, int64_t n, int64_t dim, const float* pre, ActDType dt, float* out) {
  for (int64_t k = 0; k < dim; ++k) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += pre[i] * X[i * dim + k];
    out[k] = round_act(acc, dt);
  }
}

void mhc_expand(const float* X, int64_t n, int64_t dim, const float* y, const float* post, const float* comb,
                ActDType dt, float* X_out) {
  for (int64_t k = 0; k < n; ++k) {
    const float pk = round_act(post[k], dt);
    for (int64_t d = 0; d < dim; ++d) {
      float mix = 0.0f;
      for (int64_t j = 0; j < n; ++j) mix += round_act(comb[j * n + k], dt) * X[j * dim + d];
      X_out[k * dim + d] = round_act(round_act(pk * y[d], dt) + round_act(mix, dt), dt);
    }
  }
}

}  // namespace fp4moe::cpu
