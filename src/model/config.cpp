// DeepSeek-V4 model configuration: checks and config.json output (see config.h).
#include "model/config.h"

#include <stdexcept>

#include <nlohmann/json.hpp>

namespace fp4moe::model {

const char* to_string(AttnType t) {
  switch (t) {
    case AttnType::kSliding: return "sliding_attention";
    case AttnType::kCSA: return "compressed_sparse_attention";
    case AttnType::kHCA: return "heavily_compressed_attention";
  }
  return "?";
}
const char* to_string(MlpType t) { return t == MlpType::kHashMoe ? "hash_moe" : "moe"; }

namespace {
[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("config: " + what); }
}  // namespace

void validate_v4_config(const V4Config& c) {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0) bad(std::string(name) + " must be positive, got " + std::to_string(v));
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.num_layers, "num_hidden_layers");
  positive(c.num_heads, "num_attention_heads");
  positive(c.head_dim, "head_dim");
  positive(c.q_lora_rank, "q_lora_rank");
  positive(c.o_groups, "o_groups");
  positive(c.o_lora_rank, "o_lora_rank");
  positive(c.sliding_window, "sliding_window");
  positive(c.csa_ratio, "compress rate (CSA)");
  positive(c.hca_ratio, "compress rate (HCA)");
  positive(c.index_n_heads, "index_n_heads");
  positive(c.index_head_dim, "index_head_dim");
  positive(c.index_topk, "index_topk");
  positive(c.hc_mult, "hc_mult");
  positive(c.hc_sinkhorn_iters, "hc_sinkhorn_iters");
  positive(c.n_routed_experts, "n_routed_experts");
  positive(c.num_experts_per_tok, "num_experts_per_tok");
  positive(c.moe_intermediate_size, "moe_intermediate_size");
  if (c.num_experts_per_tok > c.n_routed_experts)
    bad("num_experts_per_tok (" + std::to_string(c.num_experts_per_tok) + ") exceeds n_routed_experts (" +
        std::to_string(c.n_routed_experts) + ")");
  if (c.num_heads % c.o_groups != 0)
    bad("num_attention_heads (" + std::to_string(c.num_heads) + ") is not divisible by o_groups (" +
        std::to_string(c.o_groups) + ")");
  if (c.rope_dim <= 0 || c.rope_dim % 2 != 0 || c.rope_dim > c.head_dim || c.rope_dim > c.index_head_dim)
    bad("rotary dims (" + std::to_string(c.rope_dim) + ") must be even, positive and at most head_dim (" +
        std::to_string(c.head_dim) + ") and index_head_dim (" + std::to_string(c.index_head_dim) + ")");
  if (int64_t(c.layer_types.size()) != c.num_layers || int64_t(c.mlp_layer_types.size()) != c.num_layers)
    bad("per-layer type lists must have num_hidden_layers entries");
}

std::string v4_config_to_json(const V4Config& c) {
  nlohmann::json j;
  j["architectures"] = {"DeepseekV4ForCausalLM"};
  j["model_type"] = "deepseek_v4";
  j["torch_dtype"] = "bfloat16";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = 1;
  j["head_dim"] = c.head_dim;
  j["partial_rotary_factor"] = double(c.rope_dim) / double(c.head_dim);
  j["q_lora_rank"] = c.q_lora_rank;
  j["o_groups"] = c.o_groups;
  j["o_lora_rank"] = c.o_lora_rank;
  j["sliding_window"] = c.sliding_window;
  j["compress_rates"] = {{"compressed_sparse_attention", c.csa_ratio}, {"heavily_compressed_attention", c.hca_ratio}};
  j["rope_theta"] = c.rope_main.theta;
  j["compress_rope_theta"] = c.rope_compress.theta;
  if (c.rope_compress.yarn) {
    const auto& y = c.rope_compress.yarn_params;
    j["rope_scaling"] = {{"type", "yarn"}, {"factor", y.factor}, {"original_max_position_embeddings", y.original_max_position},
                         {"beta_fast", y.beta_fast}, {"beta_slow", y.beta_slow}};
  }
  j["index_n_heads"] = c.index_n_heads;
  j["index_head_dim"] = c.index_head_dim;
  j["index_topk"] = c.index_topk;
  j["hc_mult"] = c.hc_mult;
  j["hc_sinkhorn_iters"] = c.hc_sinkhorn_iters;
  j["hc_eps"] = c.hc_eps;
  j["n_routed_experts"] = c.n_routed_experts;
  j["n_shared_experts"] = 1;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["scoring_func"] = "sqrtsoftplus";
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["norm_topk_prob"] = true;
  j["swiglu_limit"] = c.swiglu_limit;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = false;
  j["num_nextn_predict_layers"] = 0;
  j["max_position_embeddings"] = 4096;
  j["bos_token_id"] = 0;
  j["eos_token_id"] = 1;
  std::vector<std::string> lt, mt;
  for (AttnType t : c.layer_types) lt.push_back(to_string(t));
  for (MlpType t : c.mlp_layer_types) mt.push_back(to_string(t));
  j["layer_types"] = lt;
  j["mlp_layer_types"] = mt;
  return j.dump(2);
}

}  // namespace fp4moe::model
