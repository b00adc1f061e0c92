// CPU reference MoE routers and layer (see moe_ref.h).
#include "ops/cpu/moe_ref.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/cpu/linear_ref.h"
#include "ops/cpu/router_ref.h"
#include "ops/cpu/swiglu_ref.h"

namespace fp4moe::cpu {

const char* to_string(RouterKind k) {
  switch (k) {
    case RouterKind::kV4Scored: return "v4-scored";
    case RouterKind::kV4Hash: return "v4-hash";
    case RouterKind::kV3Grouped: return "v3-grouped";
    case RouterKind::kSoftmax: return "softmax";
  }
  return "?";
}

void validate_router(const RouterParams& p) {
  const std::string what = std::string("router ") + to_string(p.kind) + ": ";
  if (p.n_experts <= 0 || p.n_experts > 512)
    throw std::invalid_argument(what + "n_experts must be in [1, 512], got " + std::to_string(p.n_experts));
  if (p.top_k <= 0 || p.top_k > p.n_experts || p.top_k > 16)
    throw std::invalid_argument(what + "top_k must be in [1, min(16, n_experts)], got " + std::to_string(p.top_k));
  if (p.kind == RouterKind::kV3Grouped) {
    if (p.n_group <= 0 || p.n_experts % p.n_group != 0 || p.n_experts / p.n_group < 2 || p.n_group > 32)
      throw std::invalid_argument(what + "n_group must divide n_experts into groups of >= 2 (at most 32 groups)");
    if (p.topk_group <= 0 || p.topk_group > p.n_group ||
        static_cast<int64_t>(p.topk_group) * (p.n_experts / p.n_group) < p.top_k)
      throw std::invalid_argument(what + "topk_group groups must hold at least top_k experts");
  }
  if (p.kind == RouterKind::kV4Hash && p.vocab <= 0) throw std::invalid_argument(what + "hash routing needs vocab > 0");
}

float router_score(RouterKind kind, float logit, ActDType dt) {
  switch (kind) {
    case RouterKind::kV4Scored:
    case RouterKind::kV4Hash: {
      const double x = logit;
      const float sp = round_act(logit > 20.0f ? logit : static_cast<float>(std::log1p(std::exp(x))), dt);
      return round_act(std::sqrt(sp), dt);
    }
    case RouterKind::kV3Grouped:
      return round_act(static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(logit)))), dt);
    case RouterKind::kSoftmax: return logit;
  }
  return 0.0f;
}

namespace {

float nan_to_neg_inf(float v) { return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v; }

// k largest keys, ties to the lower index; keys with sel[i] set are skipped.
void topk_lower_id(const float* key, int64_t n, int64_t k, int32_t* idx) {
  std::vector<char> taken(static_cast<size_t>(n), 0);
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (taken[static_cast<size_t>(i)]) continue;
      if (best < 0 || key[i] > key[best]) best = i;
    }
    taken[static_cast<size_t>(best)] = 1;
    idx[j] = static_cast<int32_t>(best);
  }
}

// Renormalized weights, V4 order of operations (router_ref.h): w = rd(rd(s / denom) * rsf).
void renorm_weights(const float* s, const int32_t* idx, int64_t k, float rsf, ActDType dt, float* w) {
  router_weights(s, idx, k, rsf, dt, w);
}

}  // namespace

void moe_route(const RouterParams& p, const float* logits, int64_t T, const float* bias, const int32_t* token_ids,
               const int32_t* tid2eid, int32_t* ids, float* weights) {
  validate_router(p);
  const int64_t E = p.n_experts, K = p.top_k;
  std::vector<float> s(static_cast<size_t>(E)), key(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits + t * E;
    int32_t* id = ids + t * K;
    float* w = weights + t * K;
    for (int64_t e = 0; e < E; ++e) s[static_cast<size_t>(e)] = router_score(p.kind, l[e], p.dt);
    switch (p.kind) {
      case RouterKind::kV4Scored: {
        for (int64_t e = 0; e < E; ++e)
          key[static_cast<size_t>(e)] = nan_to_neg_inf(round_act(s[static_cast<size_t>(e)] + (bias ? bias[e] : 0.0f), p.dt));
        topk_lower_id(key.data(), E, K, id);
        renorm_weights(s.data(), id, K, p.routed_scaling_factor, p.dt, w);
        break;
      }
      case RouterKind::kV4Hash: {
        const int64_t tok = token_ids[t];
        if (tok < 0 || tok >= p.vocab) {
          for (int64_t j = 0; j < K; ++j) id[j] = -1, w[j] = 0.0f;
          break;
        }
        bool ok = true;
        for (int64_t j = 0; j < K; ++j) {
          id[j] = tid2eid[tok * K + j];
          ok &= id[j] >= 0 && id[j] < E;
        }
        if (!ok) {  // a table entry outside the experts: the token is dropped, not read out of bounds
          for (int64_t j = 0; j < K; ++j) id[j] = -1, w[j] = 0.0f;
          break;
        }
        renorm_weights(s.data(), id, K, p.routed_scaling_factor, p.dt, w);
        break;
      }
      case RouterKind::kV3Grouped: {
        const int64_t G = p.n_group, per = E / G;
        for (int64_t e = 0; e < E; ++e)
          key[static_cast<size_t>(e)] = nan_to_neg_inf(round_act(s[static_cast<size_t>(e)] + (bias ? bias[e] : 0.0f), p.dt));
        std::vector<float> gscore(static_cast<size_t>(G));
        for (int64_t g = 0; g < G; ++g) {
          int32_t two[2];
          topk_lower_id(key.data() + g * per, per, 2, two);
          gscore[static_cast<size_t>(g)] =
              nan_to_neg_inf(key[static_cast<size_t>(g * per + two[0])] + key[static_cast<size_t>(g * per + two[1])]);
        }
        std::vector<int32_t> gsel(static_cast<size_t>(p.topk_group));
        topk_lower_id(gscore.data(), G, p.topk_group, gsel.data());
        // The candidates: the chosen groups' experts in ascending id, so that the top-k over
        // them keeps ties to the lower id and never reaches an expert outside those groups.
        std::vector<char> chosen(static_cast<size_t>(G), 0);
        for (int32_t g : gsel) chosen[static_cast<size_t>(g)] = 1;
        std::vector<int32_t> cand;
        std::vector<float> ckey;
        for (int64_t e = 0; e < E; ++e)
          if (chosen[static_cast<size_t>(e / per)]) cand.push_back(static_cast<int32_t>(e)), ckey.push_back(key[static_cast<size_t>(e)]);
        topk_lower_id(ckey.data(), static_cast<int64_t>(ckey.size()), K, id);
        for (int64_t j = 0; j < K; ++j) id[j] = cand[static_cast<size_t>(id[j])];
        if (p.renormalize) {
          renorm_weights(s.data(), id, K, p.routed_scaling_factor, p.dt, w);
        } else {
          for (int64_t j = 0; j < K; ++j) w[j] = round_act(s[static_cast<size_t>(id[j])] * p.routed_scaling_factor, p.dt);
        }
        break;
      }
      case RouterKind::kSoftmax: {
        for (int64_t e = 0; e < E; ++e) key[static_cast<size_t>(e)] = nan_to_neg_inf(l[e]);
        topk_lower_id(key.data(), E, K, id);
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t e = 0; e < E; ++e) m = key[static_cast<size_t>(e)] > m ? key[static_cast<size_t>(e)] : m;
        auto ex = [&](int64_t e) { return std::exp(static_cast<double>(key[static_cast<size_t>(e)] - m)); };
        double z = 0.0;
        if (p.renormalize) {
          for (int64_t j = 0; j < K; ++j) z += ex(id[j]);
        } else {
          double lane[32] = {};
          for (int64_t e = 0; e < E; ++e) lane[e % 32] += ex(e);  // lane l: experts l, l+32, ... ascending
          for (int off = 16; off >= 1; off /= 2) {
            double nxt[32];
            for (int i = 0; i < 32; ++i) nxt[i] = lane[i] + lane[i ^ off];
            for (int i = 0; i < 32; ++i) lane[i] = nxt[i];
          }
          z = lane[0];
        }
        for (int64_t j = 0; j < K; ++j)
          w[j] = round_act(round_act(static_cast<float>(ex(id[j]) / z), p.dt) * p.routed_scaling_factor, p.dt);
        break;
      }
    }
  }
}

namespace {

// y [n, hidden] = rd(down . swiglu(rd(gate_up . x)))
void expert_ffn(const MoeExpertsRef& e, const MatrixView& gu, const MatrixView& dn, const float* x, int64_t n,
                ActDType dt, float* y) {
  std::vector<float> h(static_cast<size_t>(n * 2 * e.inter)), a(static_cast<size_t>(n * e.inter));
  linear(x, n, gu, h.data());
  round_act(h.data(), n * 2 * e.inter, dt);
  swiglu_clamped(h.data(), n, e.inter, e.swiglu_limit, dt, a.data());
  linear(a.data(), n, dn, y);
  round_act(y, n * e.hidden, dt);
}

}  // namespace

void moe_forward(const MoeExpertsRef& e, const float* x, int64_t T, const int32_t* ids, const float* weights,
                 int64_t k, ActDType dt, float* out) {
  const int64_t H = e.hidden;
  if (e.gate_up.size() != e.down.size()) throw std::invalid_argument("moe_forward: gate_up and down slot counts differ");
  std::vector<float> ypair(static_cast<size_t>(T * k * H), 0.0f);
  std::vector<char> live(static_cast<size_t>(T * k), 0);
  for (size_t slot = 0; slot < e.gate_up.size(); ++slot) {
    std::vector<int64_t> pairs;
    for (int64_t p = 0; p < T * k; ++p) {
      const int32_t g = ids[p];
      if (g >= 0 && g < static_cast<int32_t>(e.expert_map.size()) && e.expert_map[static_cast<size_t>(g)] == static_cast<int32_t>(slot))
        pairs.push_back(p);
    }
    if (pairs.empty()) continue;
    const int64_t n = static_cast<int64_t>(pairs.size());
    std::vector<float> xs(static_cast<size_t>(n * H)), ys(static_cast<size_t>(n * H));
    for (int64_t i = 0; i < n; ++i)
      std::copy(x + (pairs[static_cast<size_t>(i)] / k) * H, x + (pairs[static_cast<size_t>(i)] / k + 1) * H, xs.begin() + i * H);
    expert_ffn(e, e.gate_up[slot], e.down[slot], xs.data(), n, dt, ys.data());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = pairs[static_cast<size_t>(i)];
      std::copy(ys.begin() + i * H, ys.begin() + (i + 1) * H, ypair.begin() + p * H);
      live[static_cast<size_t>(p)] = 1;
    }
  }
  std::vector<float> shared;
  if (e.has_shared) {
    shared.resize(static_cast<size_t>(T * H));
    if (T > 0) expert_ffn(e, e.shared_gate_up, e.shared_down, x, T, dt, shared.data());
  }
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < H; ++c) {
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t p = t * k + j;
        if (live[static_cast<size_t>(p)]) acc += ypair[static_cast<size_t>(p * H + c)] * weights[p];
      }
      float r = round_act(acc, dt);
      if (e.has_shared) r = round_act(r + shared[static_cast<size_t>(t * H + c)], dt);
      out[t * H + c] = r;
    }
  }
}

}  // namespace fp4moe::cpu
