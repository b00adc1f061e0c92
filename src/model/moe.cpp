// DeepSeek-V4 MoE block (spec section 8): router (hash or scored), routed experts with the
// clamped SwiGLU, shared expert. Tokens are grouped per expert so each expert's weights are
// read once per call. Per (token, k) pair the expert output is rounded, weighted and rounded
// again; the top-k contributions are summed in fp32 and rounded once (transformers' default
// grouped_mm order), then the shared expert's output is added.
#include <algorithm>

#include "model/model.h"
#include "ops/cpu/router_ref.h"
#include "ops/cpu/swiglu_ref.h"

namespace fp4moe::model {

std::vector<float> V4Model::moe(int64_t layer, const float* x, int64_t S, std::span<const int32_t> ids) const {
  const MoeWeights& m = w_.layers[static_cast<size_t>(layer)].moe;
  const bool hash = cfg_.mlp_layer_types[static_cast<size_t>(layer)] == MlpType::kHashMoe;
  const cpu::ActDType dt = opt_.dtype;
  const int64_t H = cfg_.hidden_size, E = cfg_.n_routed_experts, K = cfg_.num_experts_per_tok;
  const int64_t I = cfg_.moe_intermediate_size;

  // [gate | up] rows of n tokens, fused or from the two matrices.
  std::vector<float> part;
  auto gate_up = [&](const float* in, int64_t n, const GateUp& w, float* out) {
    if (!w.split) return linear(in, n, w.fused, out);
    part.resize(static_cast<size_t>(n * I));
    for (const Matrix* mat : {&w.gate, &w.up}) {
      linear(in, n, *mat, part.data());
      const int64_t off = mat == &w.gate ? 0 : I;
      for (int64_t t = 0; t < n; ++t) std::copy_n(&part[static_cast<size_t>(t * I)], I, out + t * 2 * I + off);
    }
  };

  // Router.
  std::vector<float> scores(static_cast<size_t>(S * E));
  linear(x, S, m.gate, scores.data());
  cpu::router_scores_sqrtsoftplus(scores.data(), S * E, dt, scores.data());
  std::vector<int32_t> idx(static_cast<size_t>(S * K));
  std::vector<float> wts(static_cast<size_t>(S * K));
  for (int64_t t = 0; t < S; ++t) {
    int32_t* it = &idx[static_cast<size_t>(t * K)];
    if (hash) std::copy_n(&m.tid2eid[static_cast<size_t>(ids[static_cast<size_t>(t)]) * K], K, it);
    else cpu::router_topk(&scores[static_cast<size_t>(t * E)], m.bias.data(), E, K, dt, it);
    cpu::router_weights(&scores[static_cast<size_t>(t * E)], it, K, cfg_.routed_scaling_factor, dt,
                        &wts[static_cast<size_t>(t * K)]);
  }

  // Routed experts, one group of (token, k) pairs per expert.
  std::vector<float> acc(static_cast<size_t>(S * H), 0.0f);
  std::vector<float> xs, gu, act, y;
  std::vector<int64_t> pairs;
  for (int64_t e = 0; e < E; ++e) {
    pairs.clear();
    for (int64_t p = 0; p < S * K; ++p)
      if (idx[static_cast<size_t>(p)] == e) pairs.push_back(p);
    if (pairs.empty()) continue;
    const int64_t n = int64_t(pairs.size());
    xs.resize(static_cast<size_t>(n * H));
    for (int64_t i = 0; i < n; ++i) std::copy_n(x + (pairs[static_cast<size_t>(i)] / K) * H, H, &xs[static_cast<size_t>(i * H)]);
    gu.resize(static_cast<size_t>(n * 2 * I));
    act.resize(static_cast<size_t>(n * I));
    y.resize(static_cast<size_t>(n * H));
    gate_up(xs.data(), n, m.gate_up[static_cast<size_t>(e)], gu.data());
    cpu::swiglu_clamped(gu.data(), n, I, cfg_.swiglu_limit, dt, act.data());
    linear(act.data(), n, m.down[static_cast<size_t>(e)], y.data());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = pairs[static_cast<size_t>(i)], t = p / K;
      const float w = wts[static_cast<size_t>(p)];
      for (int64_t k = 0; k < H; ++k)
        acc[static_cast<size_t>(t * H + k)] += cpu::round_act(y[static_cast<size_t>(i * H + k)] * w, dt);
    }
  }

  // Shared expert, then routed + shared.
  gu.resize(static_cast<size_t>(S * 2 * I));
  act.resize(static_cast<size_t>(S * I));
  y.resize(static_cast<size_t>(S * H));
  gate_up(x, S, m.shared_gate_up, gu.data());
  cpu::swiglu_clamped(gu.data(), S, I, cfg_.swiglu_limit, dt, act.data());
  linear(act.data(), S, m.shared_down, y.data());
  for (int64_t i = 0; i < S * H; ++i)
    y[static_cast<size_t>(i)] = cpu::round_act(cpu::round_act(acc[static_cast<size_t>(i)], dt) + y[static_cast<size_t>(i)], dt);
  return y;
}

}  // namespace fp4moe::model
