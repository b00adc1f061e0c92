// The CPU reference MoE (ops/cpu/moe_ref.h): router contracts checked from first principles
// (ties to the lower id, group limits, weights that renormalize, hash lookups and dropped
// tokens) and the layer against an fp64 computation over dequantized experts.
// Metric: routing exactly; layer relative L2 <= 1e-5 with fp32 activations (no rounding
// anywhere, fp32 accumulation over K <= 256).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "formats/quantize.h"
#include "ops/cpu/linear_ref.h"
#include "ops/cpu/moe_ref.h"
#include "util/test_util.h"

namespace fp4moe {
namespace {

using cpu::RouterKind;
using cpu::RouterParams;

RouterParams params(RouterKind k, int E, int K) {
  RouterParams p;
  p.kind = k;
  p.n_experts = E;
  p.top_k = K;
  p.routed_scaling_factor = 1.5f;
  p.vocab = 10;
  p.n_group = 4;
  p.topk_group = 2;
  return p;
}

TEST(MoeRouterRef, TiesGoToTheLowerExpertId) {
  for (RouterKind k : {RouterKind::kV4Scored, RouterKind::kV3Grouped, RouterKind::kSoftmax}) {
    const RouterParams p = params(k, 16, 3);
    std::vector<float> logits(16, 0.5f);
    std::vector<int32_t> ids(3);
    std::vector<float> w(3);
    cpu::moe_route(p, logits.data(), 1, nullptr, nullptr, nullptr, ids.data(), w.data());
    EXPECT_EQ(ids, (std::vector<int32_t>{0, 1, 2})) << cpu::to_string(k);
    // Equal weights that renormalize to the scaling factor.
    EXPECT_EQ(w[0], w[1]);
    EXPECT_NEAR(w[0] + w[1] + w[2], 1.5f, 0.02f) << cpu::to_string(k);
  }
}

TEST(MoeRouterRef, BiasChoosesButNeverWeights) {
  const RouterParams p = params(RouterKind::kV4Scored, 8, 2);
  std::vector<float> logits = {1, 2, 3, 4, 5, 6, 7, 8}, bias(8, 0.0f);
  bias[0] = 100.0f;
  std::vector<int32_t> ids(2);
  std::vector<float> w(2);
  cpu::moe_route(p, logits.data(), 1, bias.data(), nullptr, nullptr, ids.data(), w.data());
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 7}));
  const float s0 = cpu::router_score(RouterKind::kV4Scored, 1.0f, cpu::ActDType::kBF16);
  const float s7 = cpu::router_score(RouterKind::kV4Scored, 8.0f, cpu::ActDType::kBF16);
  EXPECT_NEAR(w[0], 1.5f * s0 / (s0 + s7), 1e-2f);
}

TEST(MoeRouterRef, V3SelectsOnlyInsideTheBestGroups) {
  test::SeededRng R;
  const RouterParams p = params(RouterKind::kV3Grouped, 32, 4);  // 4 groups of 8, best 2
  const int64_t T = 200;
  const auto logits = test::random_bf16(R.rng, T * 32, 2.0f);
  std::vector<int32_t> ids(static_cast<size_t>(T * 4));
  std::vector<float> w(static_cast<size_t>(T * 4));
  cpu::moe_route(p, logits.data(), T, nullptr, nullptr, nullptr, ids.data(), w.data());
  for (int64_t t = 0; t < T; ++t) {
    // Group scores from first principles: the sum of the two largest sigmoid scores.
    std::vector<std::pair<float, int>> gs;
    for (int g = 0; g < 4; ++g) {
      std::vector<float> s;
      for (int i = 0; i < 8; ++i) s.push_back(cpu::router_score(RouterKind::kV3Grouped, logits[static_cast<size_t>(t * 32 + g * 8 + i)], p.dt));
      std::sort(s.rbegin(), s.rend());
      gs.push_back({-(s[0] + s[1]), g});
    }
    std::sort(gs.begin(), gs.end());
    const std::set<int> chosen = {gs[0].second, gs[1].second};
    for (int j = 0; j < 4; ++j) EXPECT_TRUE(chosen.count(ids[static_cast<size_t>(t * 4 + j)] / 8)) << "token " << t;
  }
}

// A -inf key inside the chosen groups (a -inf bias disabling an expert, or a NaN logit) still
// ranks above every expert outside them: masking the others to -inf would let expert 0, of the
// losing group, win the tie by its lower id.
TEST(MoeRouterRef, V3NeverLeavesTheChosenGroupsOnMinusInfKeys) {
  RouterParams p = params(RouterKind::kV3Grouped, 8, 4);
  p.n_group = 2, p.topk_group = 1;  // groups {0..3}, {4..7}; the best one holds all 4 picks
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> logits = {0, 0, 0, 0, 5, 5, 5, 5, /* token 1 */ 0, 0, 0, 0, 5, 5, nan, 5};
  std::vector<float> bias(8, 0.0f);
  bias[7] = -inf;
  std::vector<int32_t> ids(8);
  std::vector<float> w(8);
  cpu::moe_route(p, logits.data(), 2, bias.data(), nullptr, nullptr, ids.data(), w.data());
  EXPECT_EQ(ids, (std::vector<int32_t>{4, 5, 6, 7, 4, 5, 6, 7}));  // -inf keys last, lower id first
  // A group score of +inf + -inf (NaN: its two best keys) ranks as -inf, so group 1 wins.
  bias = {inf, -inf, -inf, -inf, 0, 0, 0, 0};
  cpu::moe_route(p, logits.data(), 1, bias.data(), nullptr, nullptr, ids.data(), w.data());
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + 4), (std::vector<int32_t>{4, 5, 6, 7}));
}

TEST(MoeRouterRef, SoftmaxWeightsAreProbabilities) {
  RouterParams p = params(RouterKind::kSoftmax, 8, 2);
  p.routed_scaling_factor = 1.0f;
  p.dt = cpu::ActDType::kF32;
  std::vector<float> logits = {0, 1, 2, 3, 0, 0, 0, 0};
  std::vector<int32_t> ids(2);
  std::vector<float> w(2);
  p.renormalize = false;
  cpu::moe_route(p, logits.data(), 1, nullptr, nullptr, nullptr, ids.data(), w.data());
  double z = 0;
  for (float l : logits) z += std::exp(l);
  EXPECT_EQ(ids, (std::vector<int32_t>{3, 2}));
  EXPECT_NEAR(w[0], std::exp(3.0) / z, 1e-6);
  p.renormalize = true;
  cpu::moe_route(p, logits.data(), 1, nullptr, nullptr, nullptr, ids.data(), w.data());
  EXPECT_NEAR(w[0], std::exp(3.0) / (std::exp(3.0) + std::exp(2.0)), 1e-6);
}

TEST(MoeRouterRef, HashLooksUpTheTableAndDropsBadTokens) {
  const RouterParams p = params(RouterKind::kV4Hash, 8, 2);
  std::vector<int32_t> table(20);
  for (int i = 0; i < 20; ++i) table[static_cast<size_t>(i)] = (i * 3) % 8;
  table[2 * 7 + 1] = 99;  // a corrupt entry: token 7 is dropped, never indexed with 99
  std::vector<float> logits(4 * 8, 0.0f);
  std::vector<int32_t> tok = {4, -1, 7, 10}, ids(8);
  std::vector<float> w(8);
  cpu::moe_route(p, logits.data(), 4, nullptr, tok.data(), table.data(), ids.data(), w.data());
  EXPECT_EQ(ids[0], table[8]);
  EXPECT_EQ(ids[1], table[9]);
  for (int j = 2; j < 8; ++j) EXPECT_EQ(ids[static_cast<size_t>(j)], -1) << j;
}

TEST(MoeForwardRef, MatchesFp64OverDequantizedExperts) {
  test::SeededRng R;
  const int64_t H = 64, I = 64, T = 37, E = 6, K = 2;
  std::vector<Matrix> gu, dn;
  for (int e = 0; e < E + 1; ++e) {
    const auto g = test::random_bf16(R.rng, 2 * I * H, 0.125f), d = test::random_bf16(R.rng, H * I, 0.125f);
    gu.push_back(quantize_nvfp4_weight(g.data(), 2 * I, H));
    dn.push_back(quantize_mxfp4(d.data(), H, I));
  }
  cpu::MoeExpertsRef ex;
  ex.hidden = H;
  ex.inter = I;
  ex.swiglu_limit = 1.0f;  // the clamp is active for a good share of the values
  for (int e = 0; e < E - 1; ++e) ex.gate_up.push_back(gu[static_cast<size_t>(e)].view()), ex.down.push_back(dn[static_cast<size_t>(e)].view());
  ex.expert_map = {0, 1, 2, -1, 3, 4};  // expert 3 is absent
  ex.has_shared = true;
  ex.shared_gate_up = gu[static_cast<size_t>(E)].view();
  ex.shared_down = dn[static_cast<size_t>(E)].view();
  const auto x = test::random_bf16(R.rng, T * H);
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  std::vector<float> w(static_cast<size_t>(T * K));
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(E - 1));
  std::uniform_real_distribution<float> u(0.1f, 1.0f);
  for (auto& v : ids) v = d(R.rng);
  for (auto& v : w) v = u(R.rng);
  std::vector<float> out(static_cast<size_t>(T * H));
  cpu::moe_forward(ex, x.data(), T, ids.data(), w.data(), K, cpu::ActDType::kF32, out.data());

  auto ffn64 = [&](const Matrix& g, const Matrix& dm, const float* xr, std::vector<double>& y) {
    std::vector<float> gw(static_cast<size_t>(2 * I * H)), dw(static_cast<size_t>(H * I));
    cpu::dequantize(g.view(), gw.data());
    cpu::dequantize(dm.view(), dw.data());
    std::vector<double> a(static_cast<size_t>(I));
    for (int64_t i = 0; i < I; ++i) {
      double gs = 0, us = 0;
      for (int64_t k = 0; k < H; ++k) gs += double(gw[static_cast<size_t>(i * H + k)]) * xr[k], us += double(gw[static_cast<size_t>((I + i) * H + k)]) * xr[k];
      gs = std::min(gs, 1.0);
      us = std::clamp(us, -1.0, 1.0);
      a[static_cast<size_t>(i)] = gs / (1 + std::exp(-gs)) * us;
    }
    y.assign(static_cast<size_t>(H), 0.0);
    for (int64_t n = 0; n < H; ++n)
      for (int64_t i = 0; i < I; ++i) y[static_cast<size_t>(n)] += double(dw[static_cast<size_t>(n * I + i)]) * a[static_cast<size_t>(i)];
  };
  std::vector<double> ref(static_cast<size_t>(T * H), 0.0), y;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < K; ++j) {
      const int32_t g = ids[static_cast<size_t>(t * K + j)];
      if (g == 3) continue;
      const int slot = ex.expert_map[static_cast<size_t>(g)];
      ffn64(gu[static_cast<size_t>(slot)], dn[static_cast<size_t>(slot)], x.data() + t * H, y);
      for (int64_t n = 0; n < H; ++n) ref[static_cast<size_t>(t * H + n)] += y[static_cast<size_t>(n)] * w[static_cast<size_t>(t * K + j)];
    }
    ffn64(gu[static_cast<size_t>(E)], dn[static_cast<size_t>(E)], x.data() + t * H, y);
    for (int64_t n = 0; n < H; ++n) ref[static_cast<size_t>(t * H + n)] += y[static_cast<size_t>(n)];
  }
  EXPECT_LE(test::rel_l2(out.data(), ref.data(), T * H), 1e-5);
}

TEST(MoeRouterRef, RejectsBadConfigs) {
  RouterParams p = params(RouterKind::kV3Grouped, 30, 4);
  EXPECT_THROW(cpu::validate_router(p), std::invalid_argument);  // 30 experts in 4 groups
  p = params(RouterKind::kSoftmax, 8, 9);
  EXPECT_THROW(cpu::validate_router(p), std::invalid_argument);
}

}  // namespace
}  // namespace fp4moe
