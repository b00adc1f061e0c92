// DeepSeek-V4 model configuration: the fields the forward pass reads, with the per-layer
// lists resolved (spec section 1). config.json parsing lives in io (io/config.h); this is the
// forward's view of it, also built directly by tests and make-tiny.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "ops/cpu/rope_ref.h"

namespace fp4moe::model {

enum class AttnType : uint8_t { kSliding, kCSA, kHCA };
enum class MlpType : uint8_t { kHashMoe, kMoe };

const char* to_string(AttnType t);
const char* to_string(MlpType t);

struct RopeConfig {
  double theta = 10000.0;
  bool yarn = false;
  cpu::YarnParams yarn_params;
};

struct V4Config {
  int64_t vocab_size = 129280;
  int64_t hidden_size = 4096;
  int64_t num_layers = 43;
  int64_t num_heads = 64;
  int64_t head_dim = 512;
  int64_t rope_dim = 64;  // qk_rope_head_dim = head_dim * partial_rotary_factor
  int64_t q_lora_rank = 1024;
  int64_t o_groups = 8;
  int64_t o_lora_rank = 1024;
  int64_t sliding_window = 128;
  int64_t csa_ratio = 4;
  int64_t hca_ratio = 128;
  int64_t index_n_heads = 64;
  int64_t index_head_dim = 128;
  int64_t index_topk = 512;
  int64_t hc_mult = 4;
  int64_t hc_sinkhorn_iters = 20;
  float hc_eps = 1e-6f;
  int64_t n_routed_experts = 256;
  int64_t num_experts_per_tok = 6;
  int64_t moe_intermediate_size = 2048;
  float routed_scaling_factor = 1.5f;
  float swiglu_limit = 10.0f;
  float rms_norm_eps = 1e-6f;
  RopeConfig rope_main;      // sliding-only layers
  RopeConfig rope_compress;  // CSA and HCA layers (attention, compressor and indexer)
  std::vector<AttnType> layer_types;
  std::vector<MlpType> mlp_layer_types;

  int64_t ratio(AttnType t) const { return t == AttnType::kCSA ? csa_ratio : t == AttnType::kHCA ? hca_ratio : 0; }
};

// The checkpoint's config.json, parsed by io (fp4moe_io) and converted. Throws naming the field.
V4Config load_v4_config(const std::string& checkpoint_dir);
// Checks the invariants the forward relies on; throws std::invalid_argument.
void validate_v4_config(const V4Config& c);
// The config.json text for c (DeepSeek/transformers field names, explicit lists).
std::string v4_config_to_json(const V4Config& c);

}  // namespace fp4moe::model
