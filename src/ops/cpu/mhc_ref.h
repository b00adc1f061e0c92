// CPU reference manifold-constrained hyper-connections (mHC) of DeepSeek-V4 (spec section 4).
//
// The residual of a token is n streams X[n][D] (n = hc_mult = 4). Around each sub-layer one
// mHC module turns X into
//   pre[n]   collapse weights:   sigma(m_pre * scale0 + base_pre) + eps
//   post[n]  placement weights:  2 * sigma(m_post * scale1 + base_post)
//   comb[n][n] stream mixer:     softmax over rows of (m_comb * scale2 + base_comb) + eps,
//                                then Sinkhorn: 1 column normalisation, then (iters - 1) x
//                                (rows, columns), each dividing by (sum + eps)
// where m = rmsnorm(flatten(X)) . fn^T, all in fp32. Then
//   collapsed   = rd(sum_i pre_i X_i)                               (fp32 sum)
//   X'_k        = rd(rd(rd(post_k) y) + rd(sum_j rd(comb[j][k]) X_j))  (note: comb TRANSPOSED)
// The head collapse (hc_head) uses only a pre vector: sigma(m * scale + base) + eps.
#pragma once

#include <cstdint>

#include "ops/cpu/act_dtype.h"

namespace fp4moe::cpu {

// In place: comb [n, n] of positive values -> doubly stochastic (approximately) by the V4 order.
void sinkhorn(float* comb, int64_t n, int iters, float eps);

// Mixing weights of one token. X: [n, dim]; fn: [(2+n)*n, n*dim]; base: [(2+n)*n]; scale: [3].
// Outputs pre [n], post [n], comb [n, n].
void mhc_weights(const float* X, int64_t n, int64_t dim, const float* fn, const float* base, const float* scale,
                 int sinkhorn_iters, float hc_eps, float norm_eps, float* pre, float* post, float* comb);

// hc_head: pre [n] from X [n, dim]; fn: [n, n*dim]; base: [n]; scale: [1].
void hc_head_weights(const float* X, int64_t n, int64_t dim, const float* fn, const float* base, const float* scale,
                     float hc_eps, float norm_eps, float* pre);

// out [dim] = rd(sum_i pre_i X_i).
void mhc_collapse(const float* X, int64_t n, int64_t dim, const float* pre, ActDType dt, float* out);

// X_out [n, dim] from X [n, dim], the sub-layer output y [dim], post [n], comb [n, n].
void mhc_expand(const float* X, int64_t n, int64_t dim, const float* y, const float* post, const float* comb,
                ActDType dt, float* X_out);

}  // namespace fp4moe::cpu
