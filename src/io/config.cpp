// config.json parsing (see config.h).
#include "io/config.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace fp4moe::io {
namespace {

using json = nlohmann::json;

// Reads optional typed fields of one JSON object, naming the file and field on a type error.
struct Fields {
  const json& j;
  const std::string& file;

  [[noreturn]] void bad(const char* key, const char* want) const {
    throw CheckpointError(ErrorKind::kInvalidConfig, file,
                          std::string("field \"") + key + "\" is " + j[key].dump() + ", expected " + want);
  }
  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  void get(const char* key, int64_t& v) const {
    if (!has(key)) return;
    if (!j[key].is_number_integer()) bad(key, "an integer");
    v = j[key].get<int64_t>();
  }
  void get_positive(const char* key, int64_t& v) const {
    get(key, v);
    if (has(key) && v <= 0) bad(key, "a positive integer");
  }
  void get(const char* key, double& v) const {
    if (!has(key)) return;
    if (!j[key].is_number()) bad(key, "a number");
    v = j[key].get<double>();
  }
  void get(const char* key, bool& v) const {
    if (!has(key)) return;
    if (!j[key].is_boolean()) bad(key, "true or false");
    v = j[key].get<bool>();
  }
  void get(const char* key, std::string& v) const {
    if (!has(key)) return;
    if (!j[key].is_string()) bad(key, "a string");
    v = j[key].get<std::string>();
  }
  void get(const char* key, std::optional<int64_t>& v) const {
    if (!j.contains(key)) return;
    if (j[key].is_null()) { v.reset(); return; }
    if (!j[key].is_number_integer()) bad(key, "an integer or null");
    v = j[key].get<int64_t>();
  }
  void get(const char* key, std::vector<int64_t>& v) const {
    if (!has(key)) return;
    if (!j[key].is_array()) bad(key, "a list of integers");
    v.clear();
    for (const json& x : j[key]) {
      if (!x.is_number_integer()) bad(key, "a list of integers");
      v.push_back(x.get<int64_t>());
    }
  }
};

void read_rope(const json& r, RopeParameters& p, const std::string& file) {
  if (!r.is_object()) throw CheckpointError(ErrorKind::kInvalidConfig, file, "rope parameters are not an object");
  const Fields f{r, file};
  if (r.contains("type") && !r.contains("rope_type")) f.get("type", p.rope_type);
  f.get("rope_type", p.rope_type);
  f.get("rope_theta", p.rope_theta);
  f.get("partial_rotary_factor", p.partial_rotary_factor);
  f.get("factor", p.factor);
  f.get("original_max_position_embeddings", p.original_max_position_embeddings);
  f.get("beta_fast", p.beta_fast);
  f.get("beta_slow", p.beta_slow);
  if (f.has("attention_factor")) {
    double a = 1.0;
    f.get("attention_factor", a);
    p.attention_factor = a;
  }
}

AttentionType attention_type_from(const std::string& s, const std::string& file) {
  if (s == "sliding_attention") return AttentionType::kSliding;
  if (s == "compressed_sparse_attention") return AttentionType::kCSA;
  if (s == "heavily_compressed_attention") return AttentionType::kHCA;
  throw CheckpointError(ErrorKind::kInvalidConfig, file, "layer_types holds unknown layer type \"" + s + "\"");
}

DeepSeekV4Config parse_v4(const json& j, const std::string& file) {
  DeepSeekV4Config c;
  const Fields f{j, file};
  f.get_positive("vocab_size", c.vocab_size);
  f.get_positive("hidden_size", c.hidden_size);
  f.get_positive("num_hidden_layers", c.num_hidden_layers);
  f.get_positive("num_attention_heads", c.num_attention_heads);
  f.get_positive("num_key_value_heads", c.num_key_value_heads);
  f.get_positive("head_dim", c.head_dim);
  f.get_positive("q_lora_rank", c.q_lora_rank);
  f.get("partial_rotary_factor", c.partial_rotary_factor);
  if (f.has("qk_rope_head_dim")) {  // legacy kwarg: sets the partial factor
    f.get_positive("qk_rope_head_dim", c.qk_rope_head_dim);
    c.partial_rotary_factor = static_cast<double>(c.qk_rope_head_dim) / static_cast<double>(c.head_dim);
  } else {
    if (!(c.partial_rotary_factor > 0.0 && c.partial_rotary_factor <= 1.0))
      f.bad("partial_rotary_factor", "a number in (0, 1] (the rotary share of head_dim)");
    c.qk_rope_head_dim = std::llround(c.partial_rotary_factor * static_cast<double>(c.head_dim));
  }
  f.get_positive("o_groups", c.o_groups);
  f.get_positive("o_lora_rank", c.o_lora_rank);
  f.get_positive("sliding_window", c.sliding_window);
  if (f.has("compress_rates")) {
    const json& r = j["compress_rates"];
    if (!r.is_object()) f.bad("compress_rates", "an object");
    for (const auto& [k, v] : r.items()) {
      if (!v.is_number_integer() || v.get<int64_t>() <= 0) f.bad("compress_rates", "an object of positive integers");
      if (k == "csa" || k == "CSA" || k == "compressed_sparse_attention") c.compress_rate_csa = v.get<int64_t>();
      else if (k == "hca" || k == "HCA" || k == "heavily_compressed_attention") c.compress_rate_hca = v.get<int64_t>();
    }
  }
  f.get_positive("compress_rate_csa", c.compress_rate_csa);
  f.get_positive("compress_rate_hca", c.compress_rate_hca);
  f.get("rope_theta", c.rope_theta);
  f.get("compress_rope_theta", c.compress_rope_theta);
  f.get_positive("index_n_heads", c.index_n_heads);
  f.get_positive("index_head_dim", c.index_head_dim);
  f.get_positive("index_topk", c.index_topk);
  f.get_positive("hc_mult", c.hc_mult);
  f.get_positive("hc_sinkhorn_iters", c.hc_sinkhorn_iters);
  f.get("hc_eps", c.hc_eps);
  f.get_positive("n_routed_experts", c.n_routed_experts);
  f.get_positive("num_experts_per_tok", c.num_experts_per_tok);
  f.get("n_shared_experts", c.n_shared_experts);
  f.get_positive("moe_intermediate_size", c.moe_intermediate_size);
  if (!f.has("moe_intermediate_size")) f.get_positive("intermediate_size", c.moe_intermediate_size);
  f.get("scoring_func", c.scoring_func);
  f.get("routed_scaling_factor", c.routed_scaling_factor);
  f.get("norm_topk_prob", c.norm_topk_prob);
  f.get("swiglu_limit", c.swiglu_limit);
  f.get("rms_norm_eps", c.rms_norm_eps);
  f.get("hidden_act", c.hidden_act);
  f.get("tie_word_embeddings", c.tie_word_embeddings);
  f.get("num_nextn_predict_layers", c.num_nextn_predict_layers);
  f.get("num_hash_layers", c.num_hash_layers);
  f.get("bos_token_id", c.bos_token_id);
  f.get("eos_token_id", c.eos_token_id);
  f.get("max_position_embeddings", c.max_position_embeddings);
  if (c.num_attention_heads % c.o_groups != 0)
    throw CheckpointError(ErrorKind::kInvalidConfig, file, "num_attention_heads is not a multiple of o_groups");
  if (c.num_experts_per_tok > c.n_routed_experts)
    throw CheckpointError(ErrorKind::kInvalidConfig, file, "num_experts_per_tok exceeds n_routed_experts");

  // layer_types: explicit list, else legacy compress_ratios, else the built-in pattern.
  const size_t n = static_cast<size_t>(c.num_hidden_layers);
  if (f.has("layer_types")) {
    if (!j["layer_types"].is_array()) f.bad("layer_types", "a list of strings");
    for (const json& t : j["layer_types"]) {
      if (!t.is_string()) f.bad("layer_types", "a list of strings");
      c.layer_types.push_back(attention_type_from(t.get<std::string>(), file));
    }
  } else if (f.has("compress_ratios")) {
    std::vector<int64_t> ratios;
    f.get("compress_ratios", ratios);
    for (int64_t r : ratios) {
      if (r == 0) c.layer_types.push_back(AttentionType::kSliding);
      else if (r == c.compress_rate_csa) c.layer_types.push_back(AttentionType::kCSA);
      else if (r == c.compress_rate_hca) c.layer_types.push_back(AttentionType::kHCA);
      else throw CheckpointError(ErrorKind::kInvalidConfig, file, "compress_ratios holds " + std::to_string(r) +
                                                                      ", neither 0 nor the CSA or HCA rate");
    }
  } else {
    for (size_t i = 0; i < n; ++i)
      c.layer_types.push_back(i < 2 ? AttentionType::kHCA : ((i - 2) % 2 == 1 ? AttentionType::kCSA : AttentionType::kHCA));
  }
  if (c.layer_types.size() < n)
    throw CheckpointError(ErrorKind::kInvalidConfig, file, "layer types list " + std::to_string(c.layer_types.size()) +
                                                               " layers, num_hidden_layers is " + std::to_string(n));
  c.layer_types.resize(n);  // native configs carry an extra entry for the MTP layer

  if (f.has("mlp_layer_types")) {
    if (!j["mlp_layer_types"].is_array()) f.bad("mlp_layer_types", "a list of strings");
    for (const json& t : j["mlp_layer_types"]) {
      const std::string s = t.is_string() ? t.get<std::string>() : "";
      if (s == "hash_moe") c.mlp_layer_types.push_back(MlpType::kHashMoe);
      else if (s == "moe") c.mlp_layer_types.push_back(MlpType::kMoe);
      else throw CheckpointError(ErrorKind::kInvalidConfig, file, "mlp_layer_types holds " + t.dump() + ", expected \"moe\" or \"hash_moe\"");
    }
    if (c.mlp_layer_types.size() < n) throw CheckpointError(ErrorKind::kInvalidConfig, file, "mlp_layer_types is shorter than num_hidden_layers");
    c.mlp_layer_types.resize(n);
  } else {
    for (size_t i = 0; i < n; ++i)
      c.mlp_layer_types.push_back(static_cast<int64_t>(i) < c.num_hash_layers ? MlpType::kHashMoe : MlpType::kMoe);
  }

  // RoPE: "main" for sliding layers, "compress" for compressed ones. A nested
  // rope_parameters {main, compress} is taken as is; flat rope_scaling/rope_parameters keys go
  // to "compress", where YaRN's attention_factor is forced to 1.
  c.rope_main.rope_theta = c.rope_theta;
  c.rope_main.partial_rotary_factor = c.partial_rotary_factor;
  c.rope_compress.rope_theta = c.compress_rope_theta;
  c.rope_compress.partial_rotary_factor = c.partial_rotary_factor;
  const json* rp = f.has("rope_parameters") ? &j["rope_parameters"] : f.has("rope_scaling") ? &j["rope_scaling"] : nullptr;
  if (rp && rp->is_object() && rp->contains("main") && rp->contains("compress")) {
    read_rope((*rp)["main"], c.rope_main, file);
    read_rope((*rp)["compress"], c.rope_compress, file);
  } else if (rp) {
    read_rope(*rp, c.rope_compress, file);
    c.rope_compress.rope_theta = c.compress_rope_theta;
    c.rope_compress.partial_rotary_factor = c.partial_rotary_factor;
    if (c.rope_compress.rope_type == "yarn") c.rope_compress.attention_factor = 1.0;
  }
  return c;
}

DeepSeekV3Config parse_v3(const json& j, const std::string& file) {
  DeepSeekV3Config c;
  const Fields f{j, file};
  f.get_positive("vocab_size", c.vocab_size);
  f.get_positive("hidden_size", c.hidden_size);
  f.get_positive("intermediate_size", c.intermediate_size);
  f.get_positive("moe_intermediate_size", c.moe_intermediate_size);
  f.get_positive("num_hidden_layers", c.num_hidden_layers);
  f.get_positive("num_attention_heads", c.num_attention_heads);
  f.get_positive("num_key_value_heads", c.num_key_value_heads);
  f.get("q_lora_rank", c.q_lora_rank);
  f.get_positive("kv_lora_rank", c.kv_lora_rank);
  f.get_positive("qk_nope_head_dim", c.qk_nope_head_dim);
  f.get_positive("qk_rope_head_dim", c.qk_rope_head_dim);
  f.get_positive("v_head_dim", c.v_head_dim);
  f.get_positive("n_routed_experts", c.n_routed_experts);
  f.get("n_shared_experts", c.n_shared_experts);
  f.get_positive("num_experts_per_tok", c.num_experts_per_tok);
  f.get("first_k_dense_replace", c.first_k_dense_replace);
  f.get_positive("moe_layer_freq", c.moe_layer_freq);
  f.get("n_group", c.n_group);
  f.get("topk_group", c.topk_group);
  f.get("routed_scaling_factor", c.routed_scaling_factor);
  f.get("rms_norm_eps", c.rms_norm_eps);
  f.get("tie_word_embeddings", c.tie_word_embeddings);
  return c;
}

Qwen3MoeConfig parse_qwen3(const json& j, const std::string& file) {
  Qwen3MoeConfig c;
  const Fields f{j, file};
  f.get_positive("vocab_size", c.vocab_size);
  f.get_positive("hidden_size", c.hidden_size);
  f.get_positive("intermediate_size", c.intermediate_size);
  f.get_positive("moe_intermediate_size", c.moe_intermediate_size);
  f.get_positive("num_hidden_layers", c.num_hidden_layers);
  f.get_positive("num_attention_heads", c.num_attention_heads);
  f.get_positive("num_key_value_heads", c.num_key_value_heads);
  f.get_positive("head_dim", c.head_dim);
  f.get_positive("num_experts", c.num_experts);
  f.get_positive("num_experts_per_tok", c.num_experts_per_tok);
  f.get_positive("decoder_sparse_step", c.decoder_sparse_step);
  f.get("mlp_only_layers", c.mlp_only_layers);
  f.get("norm_topk_prob", c.norm_topk_prob);
  f.get("tie_word_embeddings", c.tie_word_embeddings);
  f.get("rms_norm_eps", c.rms_norm_eps);
  f.get("rope_theta", c.rope_theta);
  return c;
}

}  // namespace

const char* to_string(Architecture a) {
  switch (a) {
    case Architecture::kDeepSeekV4: return "DeepSeek-V4";
    case Architecture::kDeepSeekV3: return "DeepSeek-V3";
    case Architecture::kQwen3Moe: return "Qwen3-MoE";
  }
  return "?";
}

const char* to_string(AttentionType t) {
  switch (t) {
    case AttentionType::kSliding: return "sliding_attention";
    case AttentionType::kCSA: return "compressed_sparse_attention";
    case AttentionType::kHCA: return "heavily_compressed_attention";
  }
  return "?";
}

int64_t ModelConfig::num_layers() const {
  return v4 ? v4->num_hidden_layers : v3 ? v3->num_hidden_layers : qwen3 ? qwen3->num_hidden_layers : 0;
}
int64_t ModelConfig::hidden_size() const { return v4 ? v4->hidden_size : v3 ? v3->hidden_size : qwen3 ? qwen3->hidden_size : 0; }
int64_t ModelConfig::num_routed_experts() const {
  return v4 ? v4->n_routed_experts : v3 ? v3->n_routed_experts : qwen3 ? qwen3->num_experts : 0;
}

ModelConfig parse_model_config(const json& j, const std::string& file) {
  if (!j.is_object()) throw CheckpointError(ErrorKind::kInvalidConfig, file, "config is not a JSON object");
  std::string mt;
  if (j.contains("model_type") && j["model_type"].is_string()) mt = j["model_type"].get<std::string>();
  ModelConfig m;
  m.model_type = mt;
  if (mt == "deepseek_v4") {
    m.arch = Architecture::kDeepSeekV4;
    m.v4 = parse_v4(j, file);
  } else if (mt == "deepseek_v3") {
    m.arch = Architecture::kDeepSeekV3;
    m.v3 = parse_v3(j, file);
  } else if (mt == "qwen3_moe") {
    m.arch = Architecture::kQwen3Moe;
    m.qwen3 = parse_qwen3(j, file);
  } else {
    throw CheckpointError(ErrorKind::kUnsupported, file,
                          "unsupported architecture: model_type " + (mt.empty() ? std::string("is missing") : "\"" + mt + "\"") +
                              " (supported: deepseek_v4, deepseek_v3, qwen3_moe)");
  }
  return m;
}

json read_json_file(const std::filesystem::path& path) {
  const std::string p = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw CheckpointError(ErrorKind::kIo, p, std::filesystem::exists(path, ec) ? "not a regular file" : "no such file");
  std::FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) throw CheckpointError(ErrorKind::kIo, p, std::string("cannot open: ") + std::strerror(errno));
  std::string text;
  char buf[65536];
  for (size_t got; (got = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, got);
  std::fclose(f);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw CheckpointError(ErrorKind::kInvalidConfig, p, std::string("not valid JSON: ") + e.what());
  }
}

ModelConfig load_model_config(const std::filesystem::path& dir) {
  const std::filesystem::path p = dir / "config.json";
  return parse_model_config(read_json_file(p), p.string());
}

}  // namespace fp4moe::io
