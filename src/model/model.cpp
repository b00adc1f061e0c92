// DeepSeek-V4 forward: embedding, mHC around every block, head (see model.h). The attention
// and MoE blocks are in attention.cpp and moe.cpp.
#include "model/model.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "ops/cpu/linear_ref.h"
#include "ops/cpu/mhc_ref.h"
#include "ops/cpu/rmsnorm_ref.h"

namespace fp4moe::model {
namespace {
class CpuBackend final : public Backend {
 public:
  void linear(const float* x, int64_t m, const MatrixView& w, float* y) const override { cpu::linear(x, m, w, y); }
};
}  // namespace

std::shared_ptr<const Backend> cpu_backend() {
  static const std::shared_ptr<const Backend> b = std::make_shared<CpuBackend>();
  return b;
}

V4Model::V4Model(V4Config config, V4Weights weights, ModelOptions options)
    : cfg_(std::move(config)), w_(std::move(weights)), opt_(std::move(options)) {
  validate_v4_config(cfg_);
  if (int64_t(w_.layers.size()) != cfg_.num_hidden_layers) throw std::invalid_argument("weights do not match the config's layers");
  if (!opt_.backend) opt_.backend = cpu_backend();
  rope_main_.inv_freq = rope_inv_freq(cfg_.rope_main, cfg_.qk_rope_head_dim);
  rope_compress_.inv_freq = rope_inv_freq(cfg_.rope_compress, cfg_.qk_rope_head_dim);
}

SequenceState V4Model::new_state() const {
  SequenceState s;
  s.layers.resize(static_cast<size_t>(cfg_.num_hidden_layers));
  return s;
}

void V4Model::linear(const float* x, int64_t m, const Matrix& w, float* y) const {
  opt_.backend->linear(x, m, w.view(), y);
  cpu::round_act(y, m * w.rows, opt_.dtype);
}

std::vector<float> V4Model::forward(SequenceState& state, std::span<const int32_t> ids) const {
  const int64_t S = static_cast<int64_t>(ids.size());
  const int64_t H = cfg_.hidden_size, n = cfg_.hc_mult, V = cfg_.vocab_size;
  const cpu::ActDType dt = opt_.dtype;
  if (int64_t(state.layers.size()) != cfg_.num_hidden_layers) throw std::invalid_argument("state was not made by this model");
  for (int32_t id : ids)
    if (id < 0 || id >= V)
      throw std::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                  std::to_string(V) + ")");
  if (S == 0) return {};

  // Residual streams X [S, n, H], all n streams equal to the embedding.
  std::vector<float> X(static_cast<size_t>(S * n * H));
  {
    std::vector<float> row(static_cast<size_t>(H));
    for (int64_t t = 0; t < S; ++t) {
      cpu::dequantize_row_unscaled(w_.embed.view(), ids[static_cast<size_t>(t)], row.data());
      const float g = matrix_row_global_scale(w_.embed.view(), ids[static_cast<size_t>(t)]);
      for (int64_t k = 0; k < H; ++k) row[static_cast<size_t>(k)] = cpu::round_act(row[static_cast<size_t>(k)] * g, dt);
      for (int64_t i = 0; i < n; ++i) std::copy(row.begin(), row.end(), X.begin() + (t * n + i) * H);
    }
  }

  std::vector<float> pre(static_cast<size_t>(S * n)), post(static_cast<size_t>(S * n)),
      comb(static_cast<size_t>(S * n * n)), collapsed(static_cast<size_t>(S * H)), normed(static_cast<size_t>(S * H));
  std::vector<float> Xn(X.size());
  // One mHC-wrapped sub-layer: collapse, norm, run, expand.
  auto sublayer = [&](const HcWeights& hc, const std::vector<float>& norm_w, auto&& run) {
    for (int64_t t = 0; t < S; ++t) {
      const float* Xt = X.data() + t * n * H;
      cpu::mhc_weights(Xt, n, H, hc.fn.data(), hc.base.data(), hc.scale.data(), int(cfg_.hc_sinkhorn_iters),
                       cfg_.hc_eps, cfg_.rms_norm_eps, &pre[t * n], &post[t * n], &comb[t * n * n]);
      cpu::mhc_collapse(Xt, n, H, &pre[t * n], dt, &collapsed[t * H]);
    }
    cpu::rmsnorm(collapsed.data(), S, H, norm_w.data(), cfg_.rms_norm_eps, dt, normed.data());
    const std::vector<float> y = run(normed.data());
    for (int64_t t = 0; t < S; ++t)
      cpu::mhc_expand(X.data() + t * n * H, n, H, y.data() + t * H, &post[t * n], &comb[t * n * n], dt,
                      Xn.data() + t * n * H);
    X.swap(Xn);
  };

  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const LayerWeights& lw = w_.layers[static_cast<size_t>(l)];
    LayerState& ls = state.layers[static_cast<size_t>(l)];
    sublayer(lw.hc_attn, lw.attn_norm, [&](const float* x) { return attention(l, x, S, state.length, ls); });
    sublayer(lw.hc_ffn, lw.ffn_norm, [&](const float* x) { return moe(l, x, S, ids); });
  }

  // Head: collapse the streams, final norm, lm_head.
  for (int64_t t = 0; t < S; ++t) {
    const float* Xt = X.data() + t * n * H;
    cpu::hc_head_weights(Xt, n, H, w_.hc_head.fn.data(), w_.hc_head.base.data(), w_.hc_head.scale.data(), cfg_.hc_eps,
                         cfg_.rms_norm_eps, &pre[t * n]);
    cpu::mhc_collapse(Xt, n, H, &pre[t * n], dt, &collapsed[t * H]);
  }
  cpu::rmsnorm(collapsed.data(), S, H, w_.norm.data(), cfg_.rms_norm_eps, dt, normed.data());
  std::vector<float> logits(static_cast<size_t>(S * V));
  linear(normed.data(), S, w_.head, logits.data());
  state.length += S;
  return logits;
}

std::vector<std::vector<float>> V4Model::forward_batch(std::span<SequenceState> states,
                                                       std::span<const std::vector<int32_t>> ids) const {
  if (states.size() != ids.size()) throw std::invalid_argument("forward_batch: one state per sequence");
  std::vector<std::vector<float>> out;
  out.reserve(ids.size());
  for (size_t b = 0; b < ids.size(); ++b) out.push_back(forward(states[b], ids[b]));
  return out;
}

}  // namespace fp4moe::model
