// Quantization schemes: what a checkpoint's configuration says about how its weights are stored.
//
// Sources, in the order they are looked for:
//   hf_quant_config.json  ModelOpt: {"quantization": {"quant_algo": NVFP4 | MXFP4 | MIXED_PRECISION,
//                         "group_size", "exclude_modules", "quantized_layers" (MIXED_PRECISION:
//                         module -> {"quant_algo", "group_size"})}}
//   config.json "quantization_config":
//     quant_method "modelopt"            the same fields, flat or under "quantization"
//     quant_method "compressed-tensors"  format "nvfp4-pack-quantized" (weight_packed, reciprocal
//                                        weight_global_scale); "ignore" lists modules ("re:" regexes)
//     quant_method "fp8"                 DeepSeek-native: FP8 e4m3 with 128x128 block scales
//                                        (scale_fmt ue8m0 or fp32); V4's routed experts are MXFP4
//   nothing                              BF16
// The scheme tells what the configuration promises; the tensors themselves decide each layer's
// format (weights/linear.h) and the doctor reports where the two disagree.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "formats/matrix.h"

namespace fp4moe::io {

enum class SchemeKind : uint8_t {
  kBF16,
  kModelOptNVFP4,
  kModelOptMXFP4,
  kModelOptMixed,            // MIXED_PRECISION with a per-layer map
  kCompressedTensorsNVFP4,   // nvfp4-pack-quantized
  kDeepSeekNative,           // FP8 128x128 block (+ MXFP4 routed experts in V4)
};
const char* to_string(SchemeKind k);

struct QuantScheme {
  SchemeKind kind = SchemeKind::kBF16;
  std::string source;       // the file the scheme was read from; empty for BF16
  std::string quant_algo;   // as written (NVFP4, MIXED_PRECISION, ...)
  int64_t group_size = 0;
  std::vector<std::string> exclude;                 // module patterns: fnmatch globs, or "re:" regexes
  std::map<std::string, std::string> layer_algo;    // MIXED_PRECISION: module -> quant_algo
  ScaleKind fp8_scale = ScaleKind::kF32;            // DeepSeek-native FP8 block scales

  // What the configuration says a module (a weight's name without ".weight") should hold:
  // "NVFP4", "MXFP4", "FP8" or "" (not quantized). A module matches a pattern with or
  // without a leading "model.".
  std::string algo_for(std::string_view module) const;
  std::string describe() const;
};

// dir holds the checkpoint; config is its config.json (nullptr when absent). Throws
// CheckpointError (kInvalidConfig, naming the file and field) on a malformed configuration
// and kUnsupported for a quantization method fp4moe does not read.
QuantScheme detect_quant_scheme(const std::filesystem::path& dir, const nlohmann::json* config);
// Parses one configuration object (the content of hf_quant_config.json, or quantization_config).
QuantScheme parse_quant_config(const nlohmann::json& q, const std::string& file);

bool module_pattern_matches(std::string_view pattern, std::string_view module);

}  // namespace fp4moe::io
