// Layer-level tests of the CPU reference ops the DeepSeek-V4 forward uses, on small cases
// checked by hand (or against closed forms), plus the YaRN frequencies of the spec.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "formats/codecs.h"
#include "ops/cpu/attention_ref.h"
#include "ops/cpu/mhc_ref.h"
#include "ops/cpu/rmsnorm_ref.h"
#include "ops/cpu/rope_ref.h"
#include "ops/cpu/router_ref.h"
#include "ops/cpu/swiglu_ref.h"

namespace fp4moe::cpu {
namespace {

TEST(ModelOps, RmsNormHandChecked) {
  // x = [3, 4]: mean(x^2) = 12.5, 1/sqrt(12.5) = 0.28284271.
  const float x[2] = {3.0f, 4.0f}, w[2] = {1.0f, 2.0f};
  float out[2];
  rmsnorm(x, 1, 2, w, 0.0f, ActDType::kF32, out);
  EXPECT_NEAR(out[0], 0.84852814f, 1e-6f);
  EXPECT_NEAR(out[1], 2.0f * 1.13137085f, 1e-6f);
  // bf16: the normalised value is rounded BEFORE the weight multiplies it.
  rmsnorm(x, 1, 2, w, 0.0f, ActDType::kBF16, out);
  EXPECT_EQ(out[0], round_to_bf16(0.84852814f));
  EXPECT_EQ(out[1], round_to_bf16(2.0f * round_to_bf16(1.13137085f)));
  rmsnorm_unweighted(x, 1, 2, 0.0f, ActDType::kF32, out);
  EXPECT_NEAR(out[1], 1.13137085f, 1e-6f);
}

TEST(ModelOps, RopeRotatesTrailingPairsAndInverts) {
  // head_dim 6, rope_dim 4: dims 0..1 pass through; pairs (2,3), (4,5) rotate.
  const float f[2] = {0.5f, 0.25f};
  float x[6] = {1, 2, 1, 0, 0, 1};
  rope_apply(x, 1, 6, 4, f, 2, false, ActDType::kF32);
  EXPECT_EQ(x[0], 1.0f);
  EXPECT_EQ(x[1], 2.0f);
  EXPECT_NEAR(x[2], std::cos(1.0f), 1e-7f);  // (1, 0) rotated by 1 rad
  EXPECT_NEAR(x[3], std::sin(1.0f), 1e-7f);
  EXPECT_NEAR(x[4], -std::sin(0.5f), 1e-7f);  // (0, 1) rotated by 0.5 rad
  EXPECT_NEAR(x[5], std::cos(0.5f), 1e-7f);
  rope_apply(x, 1, 6, 4, f, 2, true, ActDType::kF32);
  EXPECT_NEAR(x[2], 1.0f, 1e-6f);
  EXPECT_NEAR(x[3], 0.0f, 1e-6f);
  EXPECT_NEAR(x[4], 0.0f, 1e-6f);
  EXPECT_NEAR(x[5], 1.0f, 1e-6f);
}

TEST(ModelOps, RopeFrequenciesDefaultAndYarnMatchTheSpec) {
  const std::vector<float> d = rope_inv_freq_default(10000.0, 64);
  EXPECT_FLOAT_EQ(d[0], 1.0f);
  EXPECT_NEAR(d[16], std::pow(10000.0, -0.5), 1e-9);
  // Spec section 5: theta 160000, factor 16, L0 65536, beta 32/1: i <= 15 unchanged,
  // i = 16 -> 0.0022656249, i = 24 -> 1.953125e-05, i >= 25 -> theta_i / 16.
  const std::vector<float> base = rope_inv_freq_default(160000.0, 64);
  const std::vector<float> y = rope_inv_freq_yarn(160000.0, 64, YarnParams{16.0, 65536.0, 32.0, 1.0, true});
  for (int i = 0; i <= 15; ++i) EXPECT_FLOAT_EQ(y[i], base[i]) << i;
  EXPECT_NEAR(y[16], 0.0022656249f, 1e-9f);
  EXPECT_NEAR(y[24], 1.953125e-05f, 1e-11f);
  for (int i = 25; i < 32; ++i) EXPECT_NEAR(y[i], base[i] / 16.0f, 1e-6f * base[i]) << i;
}

TEST(ModelOps, AttentionWithSinksHandChecked) {
  // One head, dim 2, two keys; logits 1 and 0 (scale 1), sink 0: P = e/(e+1+1), 1/(e+2).
  const float q[2] = {1.0f, 0.0f}, k0[2] = {1.0f, 0.0f}, k1[2] = {0.0f, 1.0f}, sink[1] = {0.0f};
  const float* keys[2] = {k0, k1};
  float out[2];
  attention_with_sinks(q, 1, 2, keys, 2, sink, 1.0f, ActDType::kF32, out);
  const double e = std::exp(1.0);
  EXPECT_NEAR(out[0], e / (e + 2.0), 1e-6);
  EXPECT_NEAR(out[1], 1.0 / (e + 2.0), 1e-6);
  // No keys: all mass on the sink, output zero.
  attention_with_sinks(q, 1, 2, keys, 0, sink, 1.0f, ActDType::kF32, out);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
}

TEST(ModelOps, SinkhornGivesDoublyStochastic) {
  float c[9] = {1, 2, 3, 4, 5, 6, 7, 8, 10};
  sinkhorn(c, 3, 20, 0.0f);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(c[i * 3] + c[i * 3 + 1] + c[i * 3 + 2], 1.0f, 1e-4f);
    EXPECT_NEAR(c[i] + c[3 + i] + c[6 + i], 1.0f, 1e-6f);  // columns are normalised last
  }
}

TEST(ModelOps, MhcExpandUsesTheTransposedMixer) {
  // X streams = [1], [10]; comb = [[0, 1], [0, 0]]: output stream 1 = comb[0][1]*X0 = 1,
  // output stream 0 = comb[0][0]*X0 + comb[1][0]*X1 = 0 (plus post * y = 0).
  const float X[2] = {1.0f, 10.0f}, y[1] = {0.0f}, post[2] = {1.0f, 1.0f}, comb[4] = {0, 1, 0, 0};
  float out[2];
  mhc_expand(X, 2, 1, y, post, comb, ActDType::kF32, out);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 1.0f);
  // pre weights: collapse = sum pre_i X_i.
  const float pre[2] = {0.5f, 0.25f};
  float col[1];
  mhc_collapse(X, 2, 1, pre, ActDType::kF32, col);
  EXPECT_EQ(col[0], 3.0f);
}

TEST(ModelOps, MhcWeightsWithZeroFnAreClosedForm) {
  // fn = 0 => m = 0: pre = sigmoid(base) + eps, post = 2 sigmoid(base), comb = Sinkhorn(softmax(base)).
  const int64_t n = 2, dim = 3;
  std::vector<float> X = {1, 2, 3, 4, 5, 6}, fn((2 + n) * n * n * dim, 0.0f), base = {0, 1, 0, -1, 0, 0, 0, 0};
  const float scale[3] = {1, 1, 1};
  float pre[2], post[2], comb[4];
  mhc_weights(X.data(), n, dim, fn.data(), base.data(), scale, 20, 1e-6f, 1e-6f, pre, post, comb);
  EXPECT_NEAR(pre[0], 0.5f + 1e-6f, 1e-7f);
  EXPECT_NEAR(pre[1], 1.0f / (1.0f + std::exp(-1.0f)) + 1e-6f, 1e-7f);
  EXPECT_NEAR(post[0], 1.0f, 1e-6f);
  EXPECT_NEAR(post[1], 2.0f / (1.0f + std::exp(1.0f)), 1e-6f);
  for (float v : comb) EXPECT_NEAR(v, 0.5f, 1e-5f);  // uniform logits
}

TEST(ModelOps, RouterScoresTopkAndWeights) {
  const float logits[4] = {0.0f, 25.0f, -1.0f, 2.0f};
  float s[4];
  router_scores_sqrtsoftplus(logits, 4, ActDType::kF32, s);
  EXPECT_NEAR(s[0], std::sqrt(std::log(2.0f)), 1e-6f);
  EXPECT_NEAR(s[1], 5.0f, 1e-6f);  // above the softplus threshold: sqrt(x)
  // The bias picks expert 2 over expert 3 but does not weight it.
  const float bias[4] = {0.0f, 0.0f, 10.0f, 0.0f};
  int32_t idx[2];
  router_topk(s, bias, 4, 2, ActDType::kF32, idx);
  EXPECT_EQ(idx[0], 2);
  EXPECT_EQ(idx[1], 1);
  float w[2];
  router_weights(s, idx, 2, 1.5f, ActDType::kF32, w);
  EXPECT_NEAR(w[0], s[2] / (s[2] + s[1]) * 1.5f, 1e-6f);
  EXPECT_NEAR(w[0] + w[1], 1.5f, 1e-6f);
}

// NaN scores (from NaN logits) rank last, as -inf, ties to the lower index; the sort's
// comparator never sees a NaN (which would make its order undefined).
TEST(ModelOps, RouterTopkRanksNaNKeysLast) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float s[6] = {nan, 1.0f, 2.0f, nan, -inf, 0.5f};
  int32_t idx[6];
  router_topk(s, nullptr, 6, 6, ActDType::kF32, idx);
  const int32_t want[6] = {2, 1, 5, 0, 3, 4};  // NaN and -inf keys tie: lower index first
  for (int i = 0; i < 6; ++i) EXPECT_EQ(idx[i], want[i]) << i;
  router_topk(s, nullptr, 6, 2, ActDType::kBF16, idx);
  EXPECT_EQ(idx[0], 2);
  EXPECT_EQ(idx[1], 1);
}

TEST(ModelOps, SwigluClampsGateAboveAndUpBothWays) {
  const float gu[4] = {20.0f, -3.0f, 50.0f, -50.0f};  // gate [20, -3], up [50, -50]
  float a[2];
  swiglu_clamped(gu, 1, 2, 10.0f, ActDType::kF32, a);
  EXPECT_NEAR(a[0], 10.0f / (1.0f + std::exp(-10.0f)) * 10.0f, 1e-4f);
  EXPECT_NEAR(a[1], -3.0f / (1.0f + std::exp(3.0f)) * -10.0f, 1e-5f);
}

}  // namespace
}  // namespace fp4moe::cpu
