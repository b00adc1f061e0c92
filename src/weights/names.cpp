// Canonical tensor names (see names.h).
#include "weights/names.h"

#include <utility>

namespace fp4moe::weights {
namespace {

// transformers name fragment -> native fragment, applied in order to the part after
// "layers.N." (or to the whole name at model level). Longer, more specific fragments first.
constexpr std::pair<std::string_view, std::string_view> kRenames[] = {
    {"self_attn.compressor.indexer.kv_proj", "attn.indexer.compressor.wkv"},
    {"self_attn.compressor.indexer.gate_proj", "attn.indexer.compressor.wgate"},
    {"self_attn.compressor.indexer.position_bias", "attn.indexer.compressor.ape"},
    {"self_attn.compressor.indexer.kv_norm", "attn.indexer.compressor.norm"},
    {"self_attn.compressor.indexer.q_b_proj", "attn.indexer.wq_b"},
    {"self_attn.compressor.indexer.scorer.weights_proj", "attn.indexer.weights_proj"},
    {"self_attn.compressor.kv_proj", "attn.compressor.wkv"},
    {"self_attn.compressor.gate_proj", "attn.compressor.wgate"},
    {"self_attn.compressor.position_bias", "attn.compressor.ape"},
    {"self_attn.compressor.kv_norm", "attn.compressor.norm"},
    {"self_attn.q_a_proj", "attn.wq_a"},
    {"self_attn.q_a_norm", "attn.q_norm"},
    {"self_attn.q_b_proj", "attn.wq_b"},
    {"self_attn.kv_proj", "attn.wkv"},
    {"self_attn.kv_norm", "attn.kv_norm"},
    {"self_attn.o_a_proj", "attn.wo_a"},
    {"self_attn.o_b_proj", "attn.wo_b"},
    {"self_attn.sinks", "attn.attn_sink"},
    {"attn_hc.fn", "hc_attn_fn"},
    {"attn_hc.base", "hc_attn_base"},
    {"attn_hc.scale", "hc_attn_scale"},
    {"ffn_hc.fn", "hc_ffn_fn"},
    {"ffn_hc.base", "hc_ffn_base"},
    {"ffn_hc.scale", "hc_ffn_scale"},
    {"input_layernorm", "attn_norm"},
    {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate.e_score_correction_bias", "ffn.gate.bias"},
    {"mlp.gate.", "ffn.gate."},
    {"mlp.shared_experts.gate_proj", "ffn.shared_experts.w1"},
    {"mlp.shared_experts.up_proj", "ffn.shared_experts.w3"},
    {"mlp.shared_experts.down_proj", "ffn.shared_experts.w2"},
    {"mlp.experts.gate_up_proj", "ffn.experts.gate_up_proj"},
    {"mlp.experts.down_proj", "ffn.experts.down_proj"},
};

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Whether s starts with the dotted path p as whole components ("embed_tokens" or "embed_tokens.x").
bool starts_with_path(std::string_view s, std::string_view p) {
  return starts_with(s, p) && (s.size() == p.size() || s[p.size()] == '.');
}

void replace_first(std::string& s, std::string_view from, std::string_view to) {
  const size_t at = s.find(from);
  if (at != std::string::npos) s.replace(at, from.size(), to);
}

}  // namespace

std::string canonical_name(std::string_view name) {
  std::string s(name);
  if (starts_with(s, "model.")) s.erase(0, 6);
  if (starts_with_path(s, "embed_tokens")) s.replace(0, 12, "embed");
  if (starts_with_path(s, "lm_head")) s.replace(0, 7, "head");
  if (starts_with(s, "hc_head.hc_")) s.replace(0, 11, "hc_head_");
  if (!starts_with(s, "layers.")) return s;
  const size_t dot = s.find('.', 7);
  if (dot == std::string::npos) return s;
  // A trailing '.' lets fragments that end in '.' ("mlp.gate.") match a module name too.
  std::string rest = s.substr(dot + 1) + ".";
  for (const auto& [from, to] : kRenames)
    if (rest.find(from) != std::string::npos) {
      replace_first(rest, from, to);
      break;
    }
  // Per-expert transformers names: mlp.experts.E.{gate,up,down}_proj -> ffn.experts.E.{w1,w3,w2}.
  if (starts_with(rest, "mlp.experts.")) {
    rest.replace(0, 4, "ffn.");
    replace_first(rest, ".gate_proj", ".w1");
    replace_first(rest, ".up_proj", ".w3");
    replace_first(rest, ".down_proj", ".w2");
  }
  if (starts_with_path(rest, "attn.norm")) rest.replace(0, 9, "attn.kv_norm");  // save_pretrained's kv norm
  rest.pop_back();
  return s.substr(0, dot + 1) + rest;
}

const char* to_string(Component c) {
  switch (c) {
    case Component::kEmbedding: return "embedding";
    case Component::kAttention: return "attention";
    case Component::kCompressor: return "attention compressor";
    case Component::kIndexer: return "attention indexer";
    case Component::kRouter: return "router";
    case Component::kRoutedExperts: return "routed experts";
    case Component::kSharedExperts: return "shared experts";
    case Component::kDenseMlp: return "dense mlp";
    case Component::kHyperConnections: return "hyper-connections";
    case Component::kNorms: return "norms";
    case Component::kHead: return "lm head";
    case Component::kMtp: return "mtp (unused)";
    case Component::kOther: return "other";
  }
  return "?";
}

Component component_of(std::string_view n) {
  auto has = [&](std::string_view p) { return n.find(p) != std::string_view::npos; };
  if (starts_with(n, "mtp.") || has(".mtp.")) return Component::kMtp;
  if (starts_with_path(n, "embed")) return Component::kEmbedding;
  if (starts_with_path(n, "head")) return Component::kHead;
  if (has("hc_")) return Component::kHyperConnections;
  if (has("norm")) return Component::kNorms;
  if (has("shared_expert")) return Component::kSharedExperts;
  if (has("experts")) return Component::kRoutedExperts;
  // The router: "ffn.gate" / "mlp.gate" as a whole path component (not gate_proj).
  for (std::string_view g : {std::string_view("ffn.gate"), std::string_view("mlp.gate")}) {
    const size_t at = n.find(g);
    if (at != std::string_view::npos && (at + g.size() == n.size() || n[at + g.size()] == '.')) return Component::kRouter;
  }
  if (has("indexer")) return Component::kIndexer;
  if (has("compressor")) return Component::kCompressor;
  if (has("attn")) return Component::kAttention;
  if (has("mlp.")) return Component::kDenseMlp;
  return Component::kOther;
}

}  // namespace fp4moe::weights
