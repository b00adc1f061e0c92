// The forward's config from io's parsed config.json (built only with fp4moe_io).
#include <stdexcept>

#include "io/config.h"
#include "model/config.h"

namespace fp4moe::model {
namespace {
RopeConfig rope_from_io(const io::RopeParameters& p, int64_t max_pos) {
  RopeConfig r;
  r.theta = p.rope_theta;
  if (p.rope_type == "yarn") {
    r.yarn = true;
    r.yarn_params.factor = p.factor;
    r.yarn_params.original_max_position =
        double(p.original_max_position_embeddings > 0 ? p.original_max_position_embeddings : max_pos);
    r.yarn_params.beta_fast = p.beta_fast;
    r.yarn_params.beta_slow = p.beta_slow;
  } else if (p.rope_type != "default") {
    throw std::invalid_argument("config: rope type '" + p.rope_type + "' is not supported (default or yarn)");
  }
  return r;
}
}  // namespace

V4Config load_v4_config(const std::string& checkpoint_dir) {
  const io::ModelConfig mc = io::load_model_config(checkpoint_dir);
  if (!mc.v4) throw std::invalid_argument(checkpoint_dir + "/config.json: not a DeepSeek-V4 model (model_type '" +
                                          mc.model_type + "')");
  const io::DeepSeekV4Config& s = *mc.v4;
  if (s.num_key_value_heads != 1) throw std::invalid_argument("config: num_key_value_heads must be 1");
  if (s.scoring_func != "sqrtsoftplus")
    throw std::invalid_argument("config: scoring_func '" + s.scoring_func + "' is not supported (sqrtsoftplus)");
  if (s.hidden_act != "silu") throw std::invalid_argument("config: hidden_act '" + s.hidden_act + "' is not supported");
  V4Config c;
  c.vocab_size = s.vocab_size;
  c.hidden_size = s.hidden_size;
  c.num_layers = s.num_hidden_layers;
  c.num_heads = s.num_attention_heads;
  c.head_dim = s.head_dim;
  c.rope_dim = s.qk_rope_head_dim;
  c.q_lora_rank = s.q_lora_rank;
  c.o_groups = s.o_groups;
  c.o_lora_rank = s.o_lora_rank;
  c.sliding_window = s.sliding_window;
  c.csa_ratio = s.compress_rate_csa;
  c.hca_ratio = s.compress_rate_hca;
  c.index_n_heads = s.index_n_heads;
  c.index_head_dim = s.index_head_dim;
  c.index_topk = s.index_topk;
  c.hc_mult = s.hc_mult;
  c.hc_sinkhorn_iters = s.hc_sinkhorn_iters;
  c.hc_eps = static_cast<float>(s.hc_eps);
  c.n_routed_experts = s.n_routed_experts;
  c.num_experts_per_tok = s.num_experts_per_tok;
  c.moe_intermediate_size = s.moe_intermediate_size;
  c.routed_scaling_factor = static_cast<float>(s.routed_scaling_factor);
  c.swiglu_limit = static_cast<float>(s.swiglu_limit);
  c.rms_norm_eps = static_cast<float>(s.rms_norm_eps);
  const int64_t max_pos = s.max_position_embeddings > 0 ? s.max_position_embeddings : 4096;
  c.rope_main = rope_from_io(s.rope_main, max_pos);
  c.rope_compress = rope_from_io(s.rope_compress, max_pos);
  for (io::AttentionType t : s.layer_types)
    c.layer_types.push_back(t == io::AttentionType::kSliding ? AttnType::kSliding
                            : t == io::AttentionType::kCSA   ? AttnType::kCSA
                                                             : AttnType::kHCA);
  for (io::MlpType t : s.mlp_layer_types)
    c.mlp_layer_types.push_back(t == io::MlpType::kHashMoe ? MlpType::kHashMoe : MlpType::kMoe);
  validate_v4_config(c);
  return c;
}

}  // namespace fp4moe::model
