// Tensor names across the namings a DeepSeek-V4 checkpoint can use, mapped to one canonical
// form: DeepSeek's native names without the "model." prefix (layers.N.attn.wq_a.weight,
// layers.N.ffn.experts.E.w1.weight, embed.weight, head.weight, ...). Accepted inputs:
//   - native names (inference/model.py), with or without "model."
//   - what transformers' save_pretrained writes (native names under "model.", attn.norm for
//     the kv norm)
//   - transformers' in-memory names (self_attn.q_a_proj, mlp.experts.gate_up_proj, ...)
// Names of other architectures pass through unchanged (minus "model."). The component of a
// name (attention, routed experts, ...) groups tensors for `inspect`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fp4moe::weights {

std::string canonical_name(std::string_view name);

enum class Component : uint8_t {
  kEmbedding, kAttention, kCompressor, kIndexer, kRouter, kRoutedExperts, kSharedExperts, kDenseMlp,
  kHyperConnections, kNorms, kHead, kMtp, kOther,
};
inline constexpr int kNumComponents = 13;
const char* to_string(Component c);
// Component of a canonical name.
Component component_of(std::string_view canonical);

}  // namespace fp4moe::weights
