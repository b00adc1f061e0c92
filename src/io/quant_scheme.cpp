// Quantization scheme detection (see quant_scheme.h).
#include "io/quant_scheme.h"

#include <fnmatch.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "io/config.h"
#include "io/safetensors.h"

namespace fp4moe::io {
namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& file, const std::string& msg) {
  throw CheckpointError(ErrorKind::kInvalidConfig, file, msg);
}

std::vector<std::string> string_list(const json& q, const char* key, const std::string& file) {
  std::vector<std::string> out;
  if (!q.contains(key) || q[key].is_null()) return out;
  if (!q[key].is_array()) bad(file, std::string("\"") + key + "\" is not a list of module names");
  for (const json& s : q[key]) {
    if (!s.is_string()) bad(file, std::string("\"") + key + "\" holds " + s.dump() + ", not a module name");
    out.push_back(s.get<std::string>());
  }
  return out;
}

QuantScheme parse_modelopt(const json& q, const std::string& file) {
  QuantScheme s;
  s.source = file;
  if (!q.contains("quant_algo") || !q["quant_algo"].is_string()) bad(file, "no \"quant_algo\" string");
  s.quant_algo = q["quant_algo"].get<std::string>();
  if (q.contains("group_size") && !q["group_size"].is_null()) {
    if (!q["group_size"].is_number_integer()) bad(file, "\"group_size\" is not an integer");
    s.group_size = q["group_size"].get<int64_t>();
  }
  s.exclude = string_list(q, "exclude_modules", file);
  if (s.quant_algo == "NVFP4") {
    s.kind = SchemeKind::kModelOptNVFP4;
    if (s.group_size == 0) s.group_size = 16;
    if (s.group_size != 16) bad(file, "NVFP4 with group_size " + std::to_string(s.group_size) + " (must be 16)");
  } else if (s.quant_algo == "MXFP4") {
    s.kind = SchemeKind::kModelOptMXFP4;
    if (s.group_size == 0) s.group_size = 32;
    if (s.group_size != 32) bad(file, "MXFP4 with group_size " + std::to_string(s.group_size) + " (must be 32)");
  } else if (s.quant_algo == "MIXED_PRECISION") {
    s.kind = SchemeKind::kModelOptMixed;
    if (!q.contains("quantized_layers") || !q["quantized_layers"].is_object())
      bad(file, "MIXED_PRECISION without a \"quantized_layers\" map");
    for (const auto& [module, v] : q["quantized_layers"].items()) {
      if (!v.is_object() || !v.contains("quant_algo") || !v["quant_algo"].is_string())
        bad(file, "quantized_layers entry '" + module + "' has no \"quant_algo\" string");
      s.layer_algo[module] = v["quant_algo"].get<std::string>();
    }
  } else {
    throw CheckpointError(ErrorKind::kUnsupported, file, "ModelOpt quant_algo \"" + s.quant_algo + "\" is not supported (NVFP4, MXFP4, MIXED_PRECISION)");
  }
  return s;
}

std::string normalise_algo(const std::string& a) {
  if (a == "FP8" || a == "FP8_BLOCK" || a == "FP8_PB_WO" || a == "FP8_BLOCKWISE") return "FP8";
  return a;
}

}  // namespace

const char* to_string(SchemeKind k) {
  switch (k) {
    case SchemeKind::kBF16: return "bf16";
    case SchemeKind::kModelOptNVFP4: return "modelopt-nvfp4";
    case SchemeKind::kModelOptMXFP4: return "modelopt-mxfp4";
    case SchemeKind::kModelOptMixed: return "modelopt-mixed-precision";
    case SchemeKind::kCompressedTensorsNVFP4: return "compressed-tensors-nvfp4";
    case SchemeKind::kDeepSeekNative: return "deepseek-native-fp8";
  }
  return "?";
}

bool module_pattern_matches(std::string_view pattern, std::string_view module) {
  const std::string m(module);
  const std::string bare = m.rfind("model.", 0) == 0 ? m.substr(6) : m;
  if (pattern.rfind("re:", 0) == 0) {
    try {
      const std::regex re(std::string(pattern.substr(3)));
      return std::regex_match(m, re) || std::regex_match(bare, re);
    } catch (const std::regex_error&) {
      return false;
    }
  }
  const std::string p(pattern);
  const std::string pbare = p.rfind("model.", 0) == 0 ? p.substr(6) : p;
  return ::fnmatch(p.c_str(), m.c_str(), 0) == 0 || ::fnmatch(pbare.c_str(), bare.c_str(), 0) == 0;
}

std::string QuantScheme::algo_for(std::string_view module) const {
  for (const std::string& p : exclude)
    if (module_pattern_matches(p, module)) return "";
  switch (kind) {
    case SchemeKind::kBF16: return "";
    case SchemeKind::kModelOptNVFP4:
    case SchemeKind::kCompressedTensorsNVFP4: return "NVFP4";
    case SchemeKind::kModelOptMXFP4: return "MXFP4";
    case SchemeKind::kDeepSeekNative: return "FP8";
    case SchemeKind::kModelOptMixed:
      for (const auto& [m, algo] : layer_algo)
        if (module_pattern_matches(m, module)) return normalise_algo(algo);
      return "";
  }
  return "";
}

std::string QuantScheme::describe() const {
  std::string d = to_string(kind);
  if (!quant_algo.empty()) d += " (" + quant_algo + (group_size ? ", group " + std::to_string(group_size) : "") + ")";
  if (kind == SchemeKind::kModelOptMixed) d += ", " + std::to_string(layer_algo.size()) + " quantized layers";
  if (kind == SchemeKind::kDeepSeekNative) d += std::string(", ") + to_string(fp8_scale) + " block scales";
  if (!exclude.empty()) d += ", " + std::to_string(exclude.size()) + " excluded patterns";
  return d;
}

QuantScheme parse_quant_config(const json& q, const std::string& file) {
  if (!q.is_object()) bad(file, "quantization config is not an object");
  if (q.contains("quantization")) {  // hf_quant_config.json layout (also allowed nested in config.json)
    if (!q["quantization"].is_object()) bad(file, "\"quantization\" is not an object");
    return parse_modelopt(q["quantization"], file);
  }
  const std::string method = q.contains("quant_method") && q["quant_method"].is_string() ? q["quant_method"].get<std::string>() : "";
  if (method == "modelopt") return parse_modelopt(q, file);
  if (method == "compressed-tensors") {
    QuantScheme s;
    s.source = file;
    s.quant_algo = q.contains("format") && q["format"].is_string() ? q["format"].get<std::string>() : "";
    if (s.quant_algo != "nvfp4-pack-quantized")
      throw CheckpointError(ErrorKind::kUnsupported, file,
                            "compressed-tensors format \"" + s.quant_algo + "\" is not supported (nvfp4-pack-quantized)");
    s.kind = SchemeKind::kCompressedTensorsNVFP4;
    s.group_size = 16;
    s.exclude = string_list(q, "ignore", file);
    return s;
  }
  if (method == "fp8") {
    QuantScheme s;
    s.source = file;
    s.kind = SchemeKind::kDeepSeekNative;
    s.quant_algo = "FP8";
    if (q.contains("weight_block_size")) {
      const json& b = q["weight_block_size"];
      if (!b.is_array() || b.size() != 2 || b[0] != 128 || b[1] != 128)
        throw CheckpointError(ErrorKind::kUnsupported, file, "FP8 weight_block_size " + b.dump() + " (only [128, 128] is supported)");
      s.group_size = 128;
    }
    const std::string fmt = q.contains("scale_fmt") && q["scale_fmt"].is_string() ? q["scale_fmt"].get<std::string>() : "";
    s.fp8_scale = fmt == "ue8m0" ? ScaleKind::kUe8m0 : ScaleKind::kF32;
    s.exclude = string_list(q, "modules_to_not_convert", file);
    return s;
  }
  throw CheckpointError(ErrorKind::kUnsupported, file,
                        "quantization method \"" + method + "\" is not supported (modelopt, compressed-tensors, fp8)");
}

QuantScheme detect_quant_scheme(const std::filesystem::path& dir, const json* config) {
  const std::filesystem::path hf = dir / "hf_quant_config.json";
  std::error_code ec;
  if (std::filesystem::exists(hf, ec)) return parse_quant_config(read_json_file(hf), hf.string());
  if (config && config->is_object() && config->contains("quantization_config") && !(*config)["quantization_config"].is_null())
    return parse_quant_config((*config)["quantization_config"], (dir / "config.json").string() + " quantization_config");
  return QuantScheme{};
}

}  // namespace fp4moe::io
