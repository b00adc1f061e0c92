// DeepSeek-V4 attention block (spec sections 5-7): q path with its norms, one shared K=V head,
// partial interleaved RoPE, sliding window, attention sinks, compressed entries (HCA: all
// causal ones; CSA: the indexer's top-k), de-rotation of the output, grouped output projection.
//
// Keys of a query at position p: the window rows j with p - W < j <= p, then compressed
// entries w with w < floor((p + 1) / ratio) (their last source token is <= p). A query never
// sees a masked key, so leaving masked keys out is exactly the reference's masking.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/model.h"
#include "ops/cpu/attention_ref.h"
#include "ops/cpu/rmsnorm_ref.h"
#include "ops/cpu/rope_ref.h"

namespace fp4moe::model {

int64_t V4Model::compress(const CompressorWeights& cw, int64_t m, const float* x, int64_t S, CompressorState& st,
                          const Rope& rope) const {
  const cpu::ActDType dt = opt_.dtype;
  const int64_t D = cw.width, PW = cw.parts * cw.width;
  st.proj_width = PW;
  std::vector<float> K(static_cast<size_t>(S * PW)), G(static_cast<size_t>(S * PW));
  linear(x, S, cw.wkv, K.data());
  linear(x, S, cw.wgate, G.data());
  st.buf_kv.insert(st.buf_kv.end(), K.begin(), K.end());
  st.buf_gate.insert(st.buf_gate.end(), G.begin(), G.end());
  st.buf_rows += S;

  const int64_t windows = st.buf_rows / m;
  // z = G + position bias (rounded) for the current window; prev_* hold the previous window.
  std::vector<float> z(static_cast<size_t>(m * PW));
  std::vector<float> prev_k = st.overlap_kv, prev_z = st.overlap_gate;
  std::vector<float> e(static_cast<size_t>(D));
  std::vector<float> logit(static_cast<size_t>(2 * m)), value(static_cast<size_t>(2 * m));
  for (int64_t w = 0; w < windows; ++w) {
    const float* k = st.buf_kv.data() + w * m * PW;
    const float* g = st.buf_gate.data() + w * m * PW;
    for (int64_t i = 0; i < m * PW; ++i) z[static_cast<size_t>(i)] = cpu::round_act(g[i] + cw.ape[static_cast<size_t>(i)], dt);
    const bool overlap = cw.parts == 2;
    const bool has_prev = overlap && !prev_k.empty();
    for (int64_t c = 0; c < D; ++c) {
      // Slots: [previous window's Ca half (CSA, when there is one)] + current window (Cb half for CSA).
      int64_t nslots = 0;
      if (has_prev)
        for (int64_t s = 0; s < m; ++s) {
          logit[static_cast<size_t>(nslots)] = prev_z[static_cast<size_t>(s * PW + c)];
          value[static_cast<size_t>(nslots++)] = prev_k[static_cast<size_t>(s * PW + c)];
        }
      const int64_t off = overlap ? D : 0;
      for (int64_t s = 0; s < m; ++s) {
        logit[static_cast<size_t>(nslots)] = z[static_cast<size_t>(s * PW + off + c)];
        value[static_cast<size_t>(nslots++)] = k[s * PW + off + c];
      }
      float mx = -INFINITY;
      for (int64_t s = 0; s < nslots; ++s) mx = std::max(mx, logit[static_cast<size_t>(s)]);
      float denom = 0.0f;
      for (int64_t s = 0; s < nslots; ++s) denom += (logit[static_cast<size_t>(s)] = std::exp(logit[static_cast<size_t>(s)] - mx));
      float acc = 0.0f;
      for (int64_t s = 0; s < nslots; ++s) {
        const float a = cpu::round_act(logit[static_cast<size_t>(s)] / denom, dt);
        acc += cpu::round_act(a * value[static_cast<size_t>(s)], dt);
      }
      e[static_cast<size_t>(c)] = cpu::round_act(acc, dt);
    }
    cpu::rmsnorm(e.data(), 1, D, cw.norm.data(), cfg_.rms_norm_eps, dt, e.data());
    cpu::rope_apply(e.data(), 1, D, cfg_.qk_rope_head_dim, rope.inv_freq.data(), st.count * m, false, dt);
    st.entries.insert(st.entries.end(), e.begin(), e.end());
    ++st.count;
    if (overlap) {
      prev_k.assign(k, k + m * PW);
      prev_z = z;
    }
  }
  if (windows > 0) {
    if (cw.parts == 2) {
      st.overlap_kv = prev_k;
      st.overlap_gate = prev_z;
    }
    const auto cut = static_cast<std::ptrdiff_t>(windows * m * PW);
    st.buf_kv.erase(st.buf_kv.begin(), st.buf_kv.begin() + cut);
    st.buf_gate.erase(st.buf_gate.begin(), st.buf_gate.begin() + cut);
    st.buf_rows -= windows * m;
  }
  return windows;
}

std::vector<float> V4Model::attention(int64_t layer, const float* x, int64_t S, int64_t pos0, LayerState& st) const {
  const AttentionWeights& a = w_.layers[static_cast<size_t>(layer)].attn;
  const AttnType type = cfg_.layer_types[static_cast<size_t>(layer)];
  const cpu::ActDType dt = opt_.dtype;
  const int64_t H = cfg_.hidden_size, D = cfg_.head_dim, nh = cfg_.num_attention_heads, R = cfg_.qk_rope_head_dim;
  const int64_t QL = cfg_.q_lora_rank, W = cfg_.sliding_window;
  const float eps = cfg_.rms_norm_eps;
  const Rope& rope = rope_for(type);

  // Q path: r = q_norm(x Wqa^T) (reused by the indexer), q = per-head-normed r Wqb^T, RoPE.
  std::vector<float> r(static_cast<size_t>(S * QL)), q(static_cast<size_t>(S * nh * D));
  linear(x, S, a.wq_a, r.data());
  cpu::rmsnorm(r.data(), S, QL, a.q_norm.data(), eps, dt, r.data());
  linear(r.data(), S, a.wq_b, q.data());
  cpu::rmsnorm_unweighted(q.data(), S * nh, D, eps, dt, q.data());
  for (int64_t t = 0; t < S; ++t) cpu::rope_apply(&q[t * nh * D], nh, D, R, rope.inv_freq.data(), pos0 + t, false, dt);

  // KV path: one head, K = V.
  std::vector<float> kv(static_cast<size_t>(S * D));
  linear(x, S, a.wkv, kv.data());
  cpu::rmsnorm(kv.data(), S, D, a.kv_norm.data(), eps, dt, kv.data());
  for (int64_t t = 0; t < S; ++t) cpu::rope_apply(&kv[t * D], 1, D, R, rope.inv_freq.data(), pos0 + t, false, dt);

  // Window rows: the state's last rows, then the new ones; row i sits at position first + i.
  const int64_t n_old = st.window_rows, first = pos0 - n_old;
  st.window.insert(st.window.end(), kv.begin(), kv.end());
  st.window_rows += S;

  // Compressed entries and, for CSA, the indexer's keys, queries and head weights.
  const int64_t ratio = compress_ratio(cfg_, type);
  if (a.compressor) compress(*a.compressor, ratio, x, S, st.compressor, rope);
  const int64_t IH = cfg_.index_n_heads, ID = cfg_.index_head_dim;
  std::vector<float> qi, wi;
  if (type == AttnType::kCSA) {
    compress(*a.indexer, ratio, x, S, st.indexer, rope);
    qi.resize(static_cast<size_t>(S * IH * ID));
    wi.resize(static_cast<size_t>(S * IH));
    linear(r.data(), S, a.index_wq_b, qi.data());
    for (int64_t t = 0; t < S; ++t) cpu::rope_apply(&qi[t * IH * ID], IH, ID, R, rope.inv_freq.data(), pos0 + t, false, dt);
    linear(x, S, a.index_weights_proj, wi.data());
  }
  const int64_t T = a.compressor ? st.compressor.count : 0;
  const float scale = static_cast<float>(std::pow(double(D), -0.5));
  const float index_scale = static_cast<float>(std::pow(double(ID), -0.5));
  const float index_weight_scale = static_cast<float>(std::pow(double(IH), -0.5));

  std::vector<float> o(static_cast<size_t>(S * nh * D));
  std::vector<const float*> keys;
  std::vector<float> score;
  std::vector<int64_t> order;
  for (int64_t t = 0; t < S; ++t) {
    const int64_t p = pos0 + t;
    keys.clear();
    for (int64_t i = 0; i < st.window_rows; ++i) {
      const int64_t j = first + i;
      if (j <= p && j > p - W) keys.push_back(&st.window[static_cast<size_t>(i * D)]);
    }
    const int64_t causal = std::min<int64_t>(T, ratio > 0 ? (p + 1) / ratio : 0);
    if (type == AttnType::kHCA || (type == AttnType::kCSA && causal <= cfg_.index_topk)) {
      for (int64_t w = 0; w < causal; ++w) keys.push_back(&st.compressor.entries[static_cast<size_t>(w * D)]);
    } else if (type == AttnType::kCSA) {
      // Indexer: score(p, w) = sum_h w_h * IH^-0.5 * ReLU(q_h . k_w) * ID^-0.5, all fp32; top-k.
      score.assign(static_cast<size_t>(causal), 0.0f);
      for (int64_t w = 0; w < causal; ++w) {
        const float* kw = &st.indexer.entries[static_cast<size_t>(w * ID)];
        float acc = 0.0f;
        for (int64_t h = 0; h < IH; ++h) {
          const float* qh = &qi[static_cast<size_t>((t * IH + h) * ID)];
          float dot = 0.0f;
          for (int64_t k = 0; k < ID; ++k) dot += qh[k] * kw[k];
          acc += std::max(dot, 0.0f) * index_scale * (wi[static_cast<size_t>(t * IH + h)] * index_weight_scale);
        }
        score[static_cast<size_t>(w)] = acc;
      }
      order.resize(static_cast<size_t>(causal));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t u, int64_t v) {
        return score[static_cast<size_t>(u)] > score[static_cast<size_t>(v)];
      });
      order.resize(static_cast<size_t>(cfg_.index_topk));
      std::sort(order.begin(), order.end());
      for (int64_t w : order) keys.push_back(&st.compressor.entries[static_cast<size_t>(w * D)]);
    }
    float* ot = &o[static_cast<size_t>(t * nh * D)];
    cpu::attention_with_sinks(&q[static_cast<size_t>(t * nh * D)], nh, D, keys.data(), int64_t(keys.size()),
                              a.sinks.data(), scale, dt, ot);
    cpu::rope_apply(ot, nh, D, R, rope.inv_freq.data(), p, true, dt);  // V carried RoPE: make it relative
  }

  // Keep the last W - 1 rows for the next call.
  if (st.window_rows > W - 1) {
    const int64_t drop = st.window_rows - (W - 1);
    st.window.erase(st.window.begin(), st.window.begin() + static_cast<std::ptrdiff_t>(drop * D));
    st.window_rows -= drop;
  }

  // Grouped output projection: group g = heads [g*nh/G, (g+1)*nh/G) -> o_lora_rank, then wo_b.
  const int64_t NG = cfg_.o_groups, GI = nh * D / NG, OL = cfg_.o_lora_rank;
  std::vector<float> xg(static_cast<size_t>(S * GI)), ug(static_cast<size_t>(S * OL)), u(static_cast<size_t>(S * NG * OL));
  for (int64_t g = 0; g < NG; ++g) {
    for (int64_t t = 0; t < S; ++t)
      std::copy_n(&o[static_cast<size_t>(t * nh * D + g * GI)], GI, &xg[static_cast<size_t>(t * GI)]);
    linear(xg.data(), S, a.wo_a[static_cast<size_t>(g)], ug.data());
    for (int64_t t = 0; t < S; ++t)
      std::copy_n(&ug[static_cast<size_t>(t * OL)], OL, &u[static_cast<size_t>(t * NG * OL + g * OL)]);
  }
  std::vector<float> out(static_cast<size_t>(S * H));
  linear(u.data(), S, a.wo_b, out.data());
  return out;
}

}  // namespace fp4moe::model
