// config.json of a Hugging Face checkpoint, parsed into typed structures.
//
// DeepSeek-V4 is parsed field by field (defaults are V4-Flash's, per the transformers 5.17
// configuration), including the derived per-layer lists: layer_types (explicit list, else the
// legacy compress_ratios, else the built-in pattern) and mlp_layer_types (explicit, else the
// first num_hash_layers are hash-routed). DeepSeek-V3 and Qwen3-MoE are recognised with their
// main shape fields; any other model_type is an "unsupported architecture" error.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace fp4moe::io {

enum class Architecture : uint8_t { kDeepSeekV4, kDeepSeekV3, kQwen3Moe };
const char* to_string(Architecture a);

enum class AttentionType : uint8_t { kSliding, kCSA, kHCA };  // sliding_attention / compressed_sparse / heavily_compressed
enum class MlpType : uint8_t { kHashMoe, kMoe };
const char* to_string(AttentionType t);

struct RopeParameters {
  std::string rope_type = "default";
  double rope_theta = 10000.0;
  double partial_rotary_factor = 0.125;
  // YaRN (rope_type "yarn") only.
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> attention_factor{};
};

struct DeepSeekV4Config {
  int64_t vocab_size = 129280;
  int64_t hidden_size = 4096;
  int64_t num_hidden_layers = 43;
  int64_t num_attention_heads = 64;
  int64_t num_key_value_heads = 1;
  int64_t head_dim = 512;
  int64_t q_lora_rank = 1024;
  double partial_rotary_factor = 0.125;  // qk_rope_head_dim / head_dim
  int64_t qk_rope_head_dim = 64;
  int64_t o_groups = 8;
  int64_t o_lora_rank = 1024;
  int64_t sliding_window = 128;
  int64_t compress_rate_csa = 4;
  int64_t compress_rate_hca = 128;
  double rope_theta = 10000.0;
  double compress_rope_theta = 160000.0;
  int64_t index_n_heads = 64;
  int64_t index_head_dim = 128;
  int64_t index_topk = 512;
  int64_t hc_mult = 4;
  int64_t hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;
  int64_t n_routed_experts = 256;
  int64_t num_experts_per_tok = 6;
  int64_t n_shared_experts = 1;  // read but ignored by the forward: always one shared MLP
  int64_t moe_intermediate_size = 2048;
  std::string scoring_func = "sqrtsoftplus";
  double routed_scaling_factor = 1.5;
  bool norm_topk_prob = true;  // ignored by the forward: weights are always renormalised
  double swiglu_limit = 10.0;
  double rms_norm_eps = 1e-6;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
  int64_t num_nextn_predict_layers = 1;
  int64_t num_hash_layers = 3;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  int64_t max_position_embeddings = 0;  // 0 when absent
  std::vector<AttentionType> layer_types;  // num_hidden_layers entries
  std::vector<MlpType> mlp_layer_types;    // num_hidden_layers entries
  RopeParameters rope_main;                // sliding-only layers
  RopeParameters rope_compress;            // compressed layers (carries YaRN when configured)
};

struct DeepSeekV3Config {
  int64_t vocab_size = 129280, hidden_size = 7168, intermediate_size = 18432, moe_intermediate_size = 2048;
  int64_t num_hidden_layers = 61, num_attention_heads = 128, num_key_value_heads = 128;
  std::optional<int64_t> q_lora_rank = 1536;
  int64_t kv_lora_rank = 512, qk_nope_head_dim = 128, qk_rope_head_dim = 64, v_head_dim = 128;
  int64_t n_routed_experts = 256, n_shared_experts = 1, num_experts_per_tok = 8;
  int64_t first_k_dense_replace = 3, moe_layer_freq = 1, n_group = 8, topk_group = 4;
  double routed_scaling_factor = 2.5, rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
};

struct Qwen3MoeConfig {
  int64_t vocab_size = 151936, hidden_size = 2048, intermediate_size = 6144, moe_intermediate_size = 768;
  int64_t num_hidden_layers = 48, num_attention_heads = 32, num_key_value_heads = 4, head_dim = 128;
  int64_t num_experts = 128, num_experts_per_tok = 8, decoder_sparse_step = 1;
  std::vector<int64_t> mlp_only_layers;
  bool norm_topk_prob = true, tie_word_embeddings = false;
  double rms_norm_eps = 1e-6, rope_theta = 1000000.0;
};

struct ModelConfig {
  Architecture arch = Architecture::kDeepSeekV4;
  std::string model_type;
  std::optional<DeepSeekV4Config> v4;
  std::optional<DeepSeekV3Config> v3;
  std::optional<Qwen3MoeConfig> qwen3;
  int64_t num_layers() const;
  int64_t hidden_size() const;
  int64_t num_routed_experts() const;
};

// Throws CheckpointError (kInvalidConfig naming the field, or kUnsupported for an unknown
// architecture). `file` names the source in messages.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& file);
// Reads and parses <dir>/config.json.
ModelConfig load_model_config(const std::filesystem::path& dir);
// Reads a JSON file; throws CheckpointError (kIo or kInvalidConfig) naming it.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace fp4moe::io
