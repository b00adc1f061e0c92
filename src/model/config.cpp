// DeepSeek-V4 model configuration: checks and config.json output (see config.h).
#include "model/config.h"

#include "ops/cpu/rope_ref.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace fp4moe::model {

const char* to_string(MlpType t) { return t == MlpType::kHashMoe ? "hash_moe" : "moe"; }

namespace {
[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("config: " + what); }
}  // namespace

std::vector<float> rope_inv_freq(const io::RopeParameters& r, int64_t rope_dim) {
  if (r.rope_type == "default") return cpu::rope_inv_freq_default(r.rope_theta, rope_dim);
  if (r.rope_type != "yarn") bad("rope type '" + r.rope_type + "' is not supported (default or yarn)");
  // V4 applies YaRN to the frequencies only: its attention factor is forced to 1 (no mscale).
  if (r.attention_factor && *r.attention_factor != 1.0)
    bad("YaRN attention_factor " + std::to_string(*r.attention_factor) + " is not supported (DeepSeek-V4 uses 1)");
  if (r.original_max_position_embeddings <= 0) bad("YaRN needs original_max_position_embeddings");
  cpu::YarnParams y;
  y.factor = r.factor;
  y.original_max_position = double(r.original_max_position_embeddings);
  y.beta_fast = r.beta_fast;
  y.beta_slow = r.beta_slow;
  return cpu::rope_inv_freq_yarn(r.rope_theta, rope_dim, y);
}

V4Config load_v4_config(const std::string& checkpoint_dir) {
  const io::ModelConfig mc = io::load_model_config(checkpoint_dir);
  if (!mc.v4)
    throw std::invalid_argument(checkpoint_dir + "/config.json: not a DeepSeek-V4 model (model_type '" + mc.model_type + "')");
  try {
    validate_v4_config(*mc.v4);
    rope_inv_freq(mc.v4->rope_main, mc.v4->qk_rope_head_dim);
    rope_inv_freq(mc.v4->rope_compress, mc.v4->qk_rope_head_dim);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(checkpoint_dir + "/config.json: " + e.what());
  }
  return *mc.v4;
}

void validate_v4_config(const V4Config& c) {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0) bad(std::string(name) + " must be positive, got " + std::to_string(v));
    if (v > kMaxConfigDimension)
      bad(std::string(name) + " must be at most " + std::to_string(kMaxConfigDimension) + ", got " + std::to_string(v));
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.head_dim, "head_dim");
  positive(c.q_lora_rank, "q_lora_rank");
  positive(c.o_groups, "o_groups");
  positive(c.o_lora_rank, "o_lora_rank");
  positive(c.sliding_window, "sliding_window");
  positive(c.compress_rate_csa, "compress rate (CSA)");
  positive(c.compress_rate_hca, "compress rate (HCA)");
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
  if (c.num_attention_heads % c.o_groups != 0)
    bad("num_attention_heads (" + std::to_string(c.num_attention_heads) + ") is not divisible by o_groups (" +
        std::to_string(c.o_groups) + ")");
  if (c.qk_rope_head_dim <= 0 || c.qk_rope_head_dim % 2 != 0 || c.qk_rope_head_dim > c.head_dim || c.qk_rope_head_dim > c.index_head_dim)
    bad("rotary dims (" + std::to_string(c.qk_rope_head_dim) + ") must be even, positive and at most head_dim (" +
        std::to_string(c.head_dim) + ") and index_head_dim (" + std::to_string(c.index_head_dim) + ")");
  if (c.num_key_value_heads != 1) bad("num_key_value_heads must be 1 (DeepSeek-V4 has one shared K=V head)");
  if (c.scoring_func != "sqrtsoftplus") bad("scoring_func '" + c.scoring_func + "' is not supported (sqrtsoftplus)");
  if (c.hidden_act != "silu") bad("hidden_act '" + c.hidden_act + "' is not supported (silu)");
  if (int64_t(c.layer_types.size()) != c.num_hidden_layers || int64_t(c.mlp_layer_types.size()) != c.num_hidden_layers)
    bad("per-layer type lists must have num_hidden_layers entries");
  if (c.max_position_embeddings < 0)
    bad("max_position_embeddings must be positive (or absent), got " + std::to_string(c.max_position_embeddings));
  if (c.num_hash_layers < 0) bad("num_hash_layers must be >= 0, got " + std::to_string(c.num_hash_layers));
  // The real-valued settings: outside these ranges the forward divides by zero, takes the
  // logarithm of a non-positive number or clamps with crossed bounds, so its logits would be
  // NaN or meaningless rather than an error. DeepSeek-V4's own values sit well inside.
  auto in_range = [](double v, const char* name, double lo, bool lo_closed, double hi, const char* usual) {
    const bool ok = std::isfinite(v) && (lo_closed ? v >= lo : v > lo) && v < hi;
    if (!ok) {
      std::ostringstream m;
      m << name << " must be " << (lo_closed ? ">= " : "> ") << lo;
      if (std::isfinite(hi)) m << " and < " << hi;
      m << ", got " << v << " (DeepSeek-V4 uses " << usual << ")";
      bad(m.str());
    }
  };
  constexpr double kInf = std::numeric_limits<double>::infinity();
  in_range(c.rms_norm_eps, "rms_norm_eps", 0.0, false, 1.0, "1e-6");
  in_range(c.hc_eps, "hc_eps", 0.0, true, 1.0, "1e-6");
  in_range(c.swiglu_limit, "swiglu_limit", 0.0, false, kInf, "10");
  in_range(c.routed_scaling_factor, "routed_scaling_factor", 0.0, false, kInf, "1.5 (Flash) or 2.5 (Pro)");
  if (c.hc_sinkhorn_iters > kMaxSinkhornIters)
    bad("hc_sinkhorn_iters must be at most " + std::to_string(kMaxSinkhornIters) + ", got " + std::to_string(c.hc_sinkhorn_iters) +
        " (DeepSeek-V4 uses 20; each iteration runs for every token of every layer)");
  for (const auto* r : {&c.rope_main, &c.rope_compress}) {
    const bool main = r == &c.rope_main;
    in_range(r->rope_theta, main ? "rope_theta" : "compress_rope_theta", 1.0, false, kInf, main ? "10000" : "160000");
    if (r->rope_type == "yarn") {
      in_range(r->factor, "YaRN factor (rope_parameters)", 0.0, false, kInf, "16");
      in_range(r->beta_fast, "YaRN beta_fast (rope_parameters)", 0.0, false, kInf, "32");
      in_range(r->beta_slow, "YaRN beta_slow (rope_parameters)", 0.0, false, kInf, "1");
    }
  }
}

std::string v4_config_to_json(const V4Config& c) {
  nlohmann::json j;
  j["architectures"] = {"DeepseekV4ForCausalLM"};
  j["model_type"] = "deepseek_v4";
  j["torch_dtype"] = "bfloat16";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = 1;
  j["head_dim"] = c.head_dim;
  j["partial_rotary_factor"] = double(c.qk_rope_head_dim) / double(c.head_dim);
  j["q_lora_rank"] = c.q_lora_rank;
  j["o_groups"] = c.o_groups;
  j["o_lora_rank"] = c.o_lora_rank;
  j["sliding_window"] = c.sliding_window;
  j["compress_rates"] = {{"compressed_sparse_attention", c.compress_rate_csa}, {"heavily_compressed_attention", c.compress_rate_hca}};
  j["rope_theta"] = c.rope_main.rope_theta;
  j["compress_rope_theta"] = c.rope_compress.rope_theta;
  if (c.rope_compress.rope_type == "yarn") {
    const auto& y = c.rope_compress;
    j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", y.factor},
                            {"original_max_position_embeddings", y.original_max_position_embeddings},
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
  j["max_position_embeddings"] = c.max_position_embeddings > 0 ? c.max_position_embeddings : 4096;
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
