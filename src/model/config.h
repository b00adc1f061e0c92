// DeepSeek-V4 model configuration: the forward reads io's parsed config.json
// (io::DeepSeekV4Config, spec section 1) directly; this header adds what the forward needs on
// top: the invariants it relies on, the compression ratio of a layer type, the RoPE
// frequencies of a rope parameter set, and config.json output for make-tiny.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"

namespace fp4moe::model {

using V4Config = io::DeepSeekV4Config;
using AttnType = io::AttentionType;
using MlpType = io::MlpType;

const char* to_string(MlpType t);

// 0 for sliding layers, else the CSA / HCA compression rate.
inline int64_t compress_ratio(const V4Config& c, AttnType t) {
  return t == AttnType::kCSA ? c.compress_rate_csa : t == AttnType::kHCA ? c.compress_rate_hca : 0;
}

// The rope_dim/2 inverse frequencies of a rope parameter set (default or YaRN); throws for
// other rope types.
std::vector<float> rope_inv_freq(const io::RopeParameters& r, int64_t rope_dim);

// The checkpoint's config.json (read by io). Throws naming the file and field.
V4Config load_v4_config(const std::string& checkpoint_dir);
// The most Sinkhorn iterations accepted (each runs for every token of every layer).
inline constexpr int64_t kMaxSinkhornIters = 1000;
// The largest size accepted for any one dimension of the config (vocab_size, hidden_size,
// the expert count, ...): 2^20, 8x DeepSeek-V4's largest (vocab_size 129280). It keeps every
// product of two or three such sizes inside int64, as the loader's expected shapes are (a
// config with hidden_size 2^40 overflowed one); the loader compares shapes dimension by
// dimension and never multiplies them out.
inline constexpr int64_t kMaxConfigDimension = int64_t(1) << 20;
// Checks the invariants the forward relies on, and the real-valued settings' ranges (outside
// them the forward would produce NaN or meaningless logits); throws std::invalid_argument
// naming the field.
void validate_v4_config(const V4Config& c);
// The config.json text for c (transformers' field names, explicit per-layer lists).
std::string v4_config_to_json(const V4Config& c);

}  // namespace fp4moe::model
