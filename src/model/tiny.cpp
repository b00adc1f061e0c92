// Tiny DeepSeek-V4 config and weights (see tiny.h).
#include "model/tiny.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>

#include "formats/codecs.h"
#include "formats/quantize.h"

namespace fp4moe::model {

V4Config tiny_v4_config() {
  V4Config c;
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.head_dim = 64;
  c.qk_rope_head_dim = 16;
  c.q_lora_rank = 32;
  c.o_groups = 2;
  c.o_lora_rank = 32;
  c.sliding_window = 16;
  c.compress_rate_csa = 4;
  c.compress_rate_hca = 8;
  c.index_n_heads = 8;
  c.index_head_dim = 32;
  c.index_topk = 4;
  c.hc_mult = 4;
  c.hc_sinkhorn_iters = 20;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 32;
  c.partial_rotary_factor = double(c.qk_rope_head_dim) / double(c.head_dim);
  c.rope_main = io::RopeParameters{"default", 10000.0, c.partial_rotary_factor};
  c.rope_compress = io::RopeParameters{"default", 160000.0, c.partial_rotary_factor};
  c.num_nextn_predict_layers = 0;
  c.max_position_embeddings = 4096;
  c.layer_types = {AttnType::kSliding, AttnType::kCSA, AttnType::kHCA, AttnType::kCSA};
  c.mlp_layer_types = {MlpType::kHashMoe, MlpType::kMoe, MlpType::kMoe, MlpType::kMoe};
  validate_v4_config(c);
  return c;
}

namespace {
class Gen {
 public:
  Gen(const V4Config& c, uint64_t seed, InMemoryWeights& out) : c_(c), rng_(seed), out_(out) {}

  // A linear weight [rows, cols], N(0, 1/cols), bf16.
  void linear(const std::string& name, int64_t rows, int64_t cols, float gain = 1.0f) {
    std::vector<float> w = normal(rows * cols, gain / std::sqrt(float(cols)));
    out_.matrices[name] = make_bf16_matrix(w.data(), rows, cols);
  }
  // A small tensor: mean + N(0, stddev).
  void tensor(const std::string& name, std::vector<int64_t> shape, float mean, float stddev, StoredDtype dt) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v = normal(n, stddev);
    for (float& x : v) {
      x += mean;
      if (dt == StoredDtype::kBF16) x = round_to_bf16(x);
    }
    out_.tensors[name] = HostTensor{std::move(shape), std::move(v), dt};
  }
  void hc(const std::string& p, int64_t rows) {
    const int64_t cols = c_.hc_mult * c_.hidden_size;
    tensor(p + "_fn", {rows, cols}, 0.0f, 1.0f / std::sqrt(float(cols)), StoredDtype::kF32);
    tensor(p + "_base", {rows}, 0.0f, 0.5f, StoredDtype::kF32);
    tensor(p + "_scale", {rows == c_.hc_mult ? 1 : 3}, 1.0f, 0.2f, StoredDtype::kF32);
  }
  void compressor(const std::string& p, int64_t width, int64_t parts, int64_t ratio) {
    linear(p + ".wkv.weight", parts * width, c_.hidden_size);
    linear(p + ".wgate.weight", parts * width, c_.hidden_size, 2.0f);
    tensor(p + ".ape", {ratio, parts * width}, 0.0f, 0.5f, StoredDtype::kF32);
    tensor(p + ".norm.weight", {width}, 1.0f, 0.1f, StoredDtype::kBF16);
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::vector<float> normal(int64_t n, float stddev) {
    std::normal_distribution<float> d(0.0f, stddev);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = d(rng_);
    return v;
  }
  const V4Config& c_;
  std::mt19937_64 rng_;
  InMemoryWeights& out_;
};
}  // namespace

InMemoryWeights make_tiny_weights(const V4Config& c, uint64_t seed) {
  InMemoryWeights w;
  Gen g(c, seed, w);
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.moe_intermediate_size, E = c.n_routed_experts;
  // The embedding and head carry larger values so logits are not flat.
  g.linear("model.embed_tokens.weight", c.vocab_size, H, std::sqrt(float(H)));
  g.linear("head.weight", c.vocab_size, H, 4.0f);
  g.tensor("model.norm.weight", {H}, 1.0f, 0.1f, StoredDtype::kBF16);
  g.hc("model.hc_head.hc", c.hc_mult);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const AttnType at = c.layer_types[static_cast<size_t>(i)];
    g.hc(p + "hc_attn", (2 + c.hc_mult) * c.hc_mult);
    g.hc(p + "hc_ffn", (2 + c.hc_mult) * c.hc_mult);
    g.tensor(p + "attn_norm.weight", {H}, 1.0f, 0.1f, StoredDtype::kBF16);
    g.tensor(p + "ffn_norm.weight", {H}, 1.0f, 0.1f, StoredDtype::kBF16);
    g.linear(p + "attn.wq_a.weight", c.q_lora_rank, H);
    g.tensor(p + "attn.q_norm.weight", {c.q_lora_rank}, 1.0f, 0.1f, StoredDtype::kBF16);
    g.linear(p + "attn.wq_b.weight", c.num_attention_heads * D, c.q_lora_rank);
    g.linear(p + "attn.wkv.weight", D, H);
    g.tensor(p + "attn.norm.weight", {D}, 1.0f, 0.1f, StoredDtype::kBF16);
    g.linear(p + "attn.wo_a.weight", c.o_groups * c.o_lora_rank, c.num_attention_heads * D / c.o_groups);
    g.linear(p + "attn.wo_b.weight", H, c.o_groups * c.o_lora_rank);
    g.tensor(p + "attn.attn_sink", {c.num_attention_heads}, 0.0f, 1.0f, StoredDtype::kF32);
    if (at != AttnType::kSliding) g.compressor(p + "attn.compressor", D, at == AttnType::kCSA ? 2 : 1, compress_ratio(c, at));
    if (at == AttnType::kCSA) {
      g.compressor(p + "attn.indexer.compressor", c.index_head_dim, 2, c.compress_rate_csa);
      g.linear(p + "attn.indexer.wq_b.weight", c.index_n_heads * c.index_head_dim, c.q_lora_rank);
      g.linear(p + "attn.indexer.weights_proj.weight", c.index_n_heads, H);
    }
    g.linear(p + "ffn.gate.weight", E, H, 2.0f);
    if (c.mlp_layer_types[static_cast<size_t>(i)] == MlpType::kMoe) {
      g.tensor(p + "ffn.gate.bias", {E}, 0.0f, 0.1f, StoredDtype::kF32);
    } else {
      // tid2eid: k distinct experts per token.
      HostTensor t{{c.vocab_size, c.num_experts_per_tok}, {}, StoredDtype::kI64};
      std::vector<int> perm(static_cast<size_t>(E));
      for (int64_t v = 0; v < c.vocab_size; ++v) {
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), g.rng());
        for (int64_t k = 0; k < c.num_experts_per_tok; ++k) t.values.push_back(float(perm[static_cast<size_t>(k)]));
      }
      w.tensors[p + "ffn.gate.tid2eid"] = std::move(t);
    }
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = p + "ffn.experts." + std::to_string(e) + ".";
      g.linear(x + "w1.weight", I, H, 2.0f);
      g.linear(x + "w3.weight", I, H, 2.0f);
      g.linear(x + "w2.weight", H, I);
    }
    g.linear(p + "ffn.shared_experts.w1.weight", I, H, 2.0f);
    g.linear(p + "ffn.shared_experts.w3.weight", I, H, 2.0f);
    g.linear(p + "ffn.shared_experts.w2.weight", H, I);
  }
  return w;
}

}  // namespace fp4moe::model
