// A tiny DeepSeek-V4 checkpoint for checkpoint-tool tests: config.json and model.safetensors in
// BF16 (F32 for hc_*, ape, sinks, router bias; I64 tid2eid), three layers (sliding, CSA, HCA),
// the first hash-routed. Tensor names are written out here by hand, as transformers'
// save_pretrained writes them (reference/deepseek_v4.md section 2), so they are an independent
// reference for the name mapping and the doctor's expected-tensor list.
#pragma once

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/codecs.h"
#include "io/safetensors.h"

namespace fp4moe::test {

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("fp4moe_ck_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline nlohmann::json tiny_v4_config() {
  return {{"model_type", "deepseek_v4"}, {"vocab_size", 64}, {"hidden_size", 64}, {"num_hidden_layers", 3},
          {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"head_dim", 32}, {"q_lora_rank", 32},
          {"o_groups", 2}, {"o_lora_rank", 32}, {"sliding_window", 8}, {"compress_rate_csa", 4}, {"compress_rate_hca", 8},
          {"index_n_heads", 2}, {"index_head_dim", 16}, {"index_topk", 3}, {"hc_mult", 4}, {"n_routed_experts", 4},
          {"num_experts_per_tok", 2}, {"moe_intermediate_size", 32}, {"num_hash_layers", 1},
          {"layer_types", {"sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"}}};
}

inline void write_text(const std::filesystem::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

inline io::OwnedTensor random_tensor(std::mt19937_64& rng, std::string name, io::Dtype dt, std::vector<int64_t> shape, float stddev) {
  io::OwnedTensor t{{std::move(name), dt, std::move(shape)}, {}};
  t.bytes.resize(t.spec.nbytes());
  std::normal_distribution<float> d(0.0f, stddev);
  const int64_t n = static_cast<int64_t>(t.bytes.size()) / io::dtype_size(dt);
  for (int64_t i = 0; i < n; ++i) {
    if (dt == io::Dtype::kBF16) {
      const uint16_t h = bf16_from_float(d(rng));
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
    } else if (dt == io::Dtype::kF32) {
      const float f = d(rng);
      std::memcpy(t.bytes.data() + 4 * i, &f, 4);
    } else if (dt == io::Dtype::kI64) {
      const int64_t v = static_cast<int64_t>(rng() % 4);
      std::memcpy(t.bytes.data() + 8 * i, &v, 8);
    }
  }
  return t;
}

inline std::vector<io::OwnedTensor> tiny_v4_tensors(std::mt19937_64& rng) {
  using io::Dtype;
  std::vector<io::OwnedTensor> t;
  auto bf = [&](std::string n, std::vector<int64_t> s, float sd = 0.05f) { t.push_back(random_tensor(rng, std::move(n), Dtype::kBF16, std::move(s), sd)); };
  auto f32 = [&](std::string n, std::vector<int64_t> s) { t.push_back(random_tensor(rng, std::move(n), Dtype::kF32, std::move(s), 0.5f)); };
  bf("model.embed_tokens.weight", {64, 64});
  f32("model.hc_head.hc_fn", {4, 256});
  f32("model.hc_head.hc_base", {4});
  f32("model.hc_head.hc_scale", {1});
  bf("model.norm.weight", {64}, 1.0f);
  bf("head.weight", {64, 64});
  const char* kinds[] = {"sliding", "csa", "hca"};
  for (int L = 0; L < 3; ++L) {
    const std::string p = "model.layers." + std::to_string(L) + ".";
    const std::string kind = kinds[L];
    bf(p + "attn_norm.weight", {64}, 1.0f);
    bf(p + "ffn_norm.weight", {64}, 1.0f);
    for (const char* hc : {"hc_attn_", "hc_ffn_"}) {
      f32(p + hc + "fn", {24, 256});
      f32(p + hc + "base", {24});
      f32(p + hc + "scale", {3});
    }
    bf(p + "attn.wq_a.weight", {32, 64});
    bf(p + "attn.q_norm.weight", {32}, 1.0f);
    bf(p + "attn.wq_b.weight", {64, 32});
    bf(p + "attn.wkv.weight", {32, 64}, 0.2f);  // a different spread from wq_a: different global scales
    bf(p + "attn.norm.weight", {32}, 1.0f);
    bf(p + "attn.wo_a.weight", {64, 32});
    bf(p + "attn.wo_b.weight", {64, 64});
    f32(p + "attn.attn_sink", {2});
    if (kind == "csa") {
      bf(p + "attn.compressor.wkv.weight", {64, 64});
      bf(p + "attn.compressor.wgate.weight", {64, 64});
      f32(p + "attn.compressor.ape", {4, 64});
      bf(p + "attn.compressor.norm.weight", {32}, 1.0f);
      bf(p + "attn.indexer.compressor.wkv.weight", {32, 64});
      bf(p + "attn.indexer.compressor.wgate.weight", {32, 64});
      f32(p + "attn.indexer.compressor.ape", {4, 32});
      bf(p + "attn.indexer.compressor.norm.weight", {16}, 1.0f);
      bf(p + "attn.indexer.wq_b.weight", {32, 32});
      bf(p + "attn.indexer.weights_proj.weight", {2, 64});
    } else if (kind == "hca") {
      bf(p + "attn.compressor.wkv.weight", {32, 64});
      bf(p + "attn.compressor.wgate.weight", {32, 64});
      f32(p + "attn.compressor.ape", {8, 32});
      bf(p + "attn.compressor.norm.weight", {32}, 1.0f);
    }
    bf(p + "ffn.gate.weight", {4, 64});
    if (L == 0) t.push_back(random_tensor(rng, p + "ffn.gate.tid2eid", Dtype::kI64, {64, 2}, 0));
    else f32(p + "ffn.gate.bias", {4});
    for (int e = 0; e < 4; ++e) {
      const std::string q = p + "ffn.experts." + std::to_string(e) + ".";
      bf(q + "w1.weight", {32, 64}, 0.02f);
      bf(q + "w2.weight", {64, 32}, 0.02f);
      bf(q + "w3.weight", {32, 64}, 0.06f);
    }
    bf(p + "ffn.shared_experts.w1.weight", {32, 64}, 0.02f);
    bf(p + "ffn.shared_experts.w2.weight", {64, 32}, 0.02f);
    bf(p + "ffn.shared_experts.w3.weight", {32, 64}, 0.06f);
  }
  return t;
}

// Writes a tiny BF16 DeepSeek-V4 checkpoint to dir; returns its tensors.
inline std::vector<io::OwnedTensor> write_tiny_v4(const std::filesystem::path& dir, std::mt19937_64& rng) {
  std::filesystem::create_directories(dir);
  std::vector<io::OwnedTensor> t = tiny_v4_tensors(rng);
  io::write_safetensors(dir / "model.safetensors", t, {{"format", "pt"}});
  write_text(dir / "config.json", tiny_v4_config().dump(2));
  return t;
}

// Reads every tensor of a checkpoint into memory (for rewriting a copy with a planted fault).
inline std::vector<io::OwnedTensor> read_all(const std::filesystem::path& path) {
  const io::Checkpoint c = io::Checkpoint::open(path);
  std::vector<io::OwnedTensor> out;
  for (const std::string& n : c.names()) {
    const io::TensorRef r = c.at(n);
    const auto b = r.bytes();
    out.push_back({{n, r.info->dtype, r.info->shape}, std::vector<uint8_t>(b.begin(), b.end())});
  }
  return out;
}

}  // namespace fp4moe::test
