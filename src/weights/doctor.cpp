// Checkpoint doctor (see doctor.h).
#include "weights/doctor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>

#include "formats/blocks.h"
#include "formats/codecs.h"
#include "weights/linear.h"
#include "weights/names.h"

namespace fp4moe::weights {
namespace fs = std::filesystem;
namespace {

using io::TensorRef;

constexpr float kMinNormalF32 = 1.17549435e-38f;

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Why a global scale (or an input scale) is unusable, or "" when it is fine.
std::string bad_scalar(float v) {
  if (std::isnan(v)) return "is NaN";
  if (std::isinf(v)) return "is infinite";
  if (v == 0.0f) return "is zero";
  if (v < 0.0f) return "is negative (" + fmt(v) + ")";
  if (v < kMinNormalF32) return "is denormal (" + fmt(v) + ")";
  if (!std::isfinite(1.0f / v)) return "has a reciprocal that overflows fp32 (" + fmt(v) + ")";
  if (1.0f / v < kMinNormalF32) return "has a denormal reciprocal (" + fmt(v) + ")";
  return "";
}

struct Counts {
  int64_t n = 0;
  int64_t first = -1;
  void add(int64_t i) {
    if (n++ == 0) first = i;
  }
};

class Doctor {
 public:
  Doctor(DoctorReport& r, const DoctorOptions& o) : r_(r), opt_(o) {}

  void add(Severity s, std::string check, const TensorRef& t, std::string msg) {
    r_.findings.push_back({s, std::move(check), t.info->name, t.file->path(), std::move(msg)});
  }

  // Runs the checks of one tensor: whatever one of them cannot read is a finding on that
  // tensor, and the report goes on (one bad tensor never loses the others' findings).
  template <class F>
  void guarded(const TensorRef& t, F&& checks) {
    try {
      checks();
    } catch (const std::exception& e) {
      add(Severity::kError, "unreadable-tensor", t, std::string("the doctor could not check it: ") + e.what());
    }
  }

  // Returns whether some block scale is large enough for a code of its block to overflow fp32
  // by itself (MXFP4 ue8m0 2^126 or 2^127; fp32 FP8-block scales above FLT_MAX / 448).
  bool check_block_scales(const LinearTensors& l) {
    const TensorRef& s = *l.scale;
    const auto bytes = s.bytes();
    const int64_t cols = s.info->shape.size() == 2 ? s.info->shape[1] : 1;
    auto where = [&](const Counts& c, const char* what) {
      return std::to_string(c.n) + " " + what + " block scale" + (c.n == 1 ? "" : "s") + ", first at [" +
             std::to_string(c.first / cols) + ", " + std::to_string(c.first % cols) + "]";
    };
    Counts nan, neg, zero, denorm, inf, range;
    bool may_overflow = false;
    const double limit = std::numeric_limits<float>::max();
    const int sb = block_scale_bytes(l.scale_kind);
    const int64_t n = sb ? static_cast<int64_t>(bytes.size()) / sb : 0;
    const bool mx = l.format == MatrixFormat::kMXFP4 && l.scale_kind == ScaleKind::kUe8m0;
    // An FP8-block ue8m0 scale 0x00 (2^-127) leaves at most 448 x 2^-127, a dead block: the
    // e4m3 zero scale's finding. (MXFP4 has its own, the block-scale-range warning.)
    const bool fp8_ue8m0 = l.format == MatrixFormat::kFP8Block && l.scale_kind == ScaleKind::kUe8m0;
    for (int64_t i = 0; i < n; ++i) {
      if (mx && bytes[i] != kUe8m0NaN && (bytes[i] < kMxfp4KernelScaleMin || bytes[i] > kMxfp4KernelScaleMax)) range.add(i);
      if (l.format != MatrixFormat::kNVFP4) {
        const double v = block_scale_value(l.scale_kind, bytes.data() + i * sb);
        may_overflow |= std::isfinite(v) && std::fabs(v) * (l.format == MatrixFormat::kFP8Block ? 448.0 : 6.0) > limit;
      }
      if (fp8_ue8m0 && bytes[i] == 0x00) {
        zero.add(i);
        continue;
      }
      switch (classify_block_scale(l.scale_kind, bytes.data() + i * sb)) {
        case BlockScaleClass::kNaN: nan.add(i); break;
        case BlockScaleClass::kInfinite: inf.add(i); break;
        case BlockScaleClass::kNegative: neg.add(i); break;
        case BlockScaleClass::kZero: zero.add(i); break;
        case BlockScaleClass::kDenormal: denorm.add(i); break;
        case BlockScaleClass::kNormal: break;
      }
    }
    r_.block_scales_checked += n;
    const char* kind = to_string(l.scale_kind);
    if (nan.n) add(Severity::kError, "block-scale-nan", s, where(nan, (std::string(kind) + " NaN").c_str()) + ": those blocks dequantize to NaN");
    if (inf.n) add(Severity::kError, "block-scale-inf", s, where(inf, "infinite"));
    if (neg.n) add(Severity::kError, "block-scale-negative", s, where(neg, "negative") + ": the sign of those weights flips");
    if (zero.n) add(Severity::kError, "block-scale-zero", s, where(zero, "zero") + ": those blocks dequantize to 0");
    if (denorm.n)
      add(Severity::kWarning, "block-scale-denormal", s, where(denorm, "denormal") + ": they keep fewer mantissa bits");
    if (range.n)
      add(Severity::kWarning, "block-scale-range", s,
          where(range, "ue8m0") + " (2^" + std::to_string(static_cast<int>(bytes[range.first]) - 127) +
              ") outside 2^-63..2^63: the CUDA kernels refuse such a block unless all its codes are zero");
    return may_overflow;
  }

  // A weight whose code x block scale x global scale overflows fp32: `run` refuses it at load
  // (matrix_bad_value, which reads a block's codes only when its scales allow an overflow).
  // Read where the scales allow one, or for every quantized weight with scan_fp8_weights.
  void check_representable(const LinearTensors& l, bool may_overflow) {
    if (l.format == MatrixFormat::kBF16 || !(may_overflow || opt_.scan_fp8_weights)) return;
    std::string bad;
    try {
      bad = matrix_bad_value(load_matrix(l).view());
    } catch (const std::exception&) {
      return;  // a structural problem (dtype, shape, companions), which the layout scan reports
    }
    // NaN and negative scales and NaN weights have findings of their own.
    if (bad.find("overflows fp32") != std::string::npos) add(Severity::kError, "weight-overflow", *l.weight, bad);
  }

  // A hash-routing table (tid2eid, [vocab, top-k]) whose expert ids are outside [0, experts):
  // `run` refuses it at load. Integer tables only (I64 / I32, as the checkpoints store them).
  static bool expert_id_dtype(io::Dtype d) { return d == io::Dtype::kI64 || d == io::Dtype::kI32; }
  void check_expert_ids(const TensorRef& t, int64_t experts) {
    const io::Dtype dt = t.info->dtype;
    if (!expert_id_dtype(dt)) return;  // check_plain_dtype reports it
    const auto bytes = t.bytes();
    const int64_t n = t.info->numel(), cols = t.info->shape.size() == 2 ? t.info->shape[1] : 1;
    Counts bad;
    int64_t first_id = 0;
    for (int64_t i = 0; i < n; ++i) {
      int64_t v = 0;
      if (dt == io::Dtype::kI64) std::memcpy(&v, bytes.data() + i * 8, 8);
      else {
        int32_t v32 = 0;
        std::memcpy(&v32, bytes.data() + i * 4, 4);
        v = v32;
      }
      if (v >= 0 && v < experts) continue;
      if (!bad.n) first_id = v;
      bad.add(i);
    }
    if (bad.n)
      add(Severity::kError, "tid2eid-range", t,
          std::to_string(bad.n) + " expert id" + (bad.n == 1 ? "" : "s") + " outside [0, " + std::to_string(experts) + "), first " +
              std::to_string(first_id) + " at [" + std::to_string(bad.first / cols) + ", " + std::to_string(bad.first % cols) + "]");
  }

  // NaN or Inf values in a BF16 or F32 tensor (an unquantized weight, a norm, an embedding, a
  // bias; the dtypes io::tensor_to_f32 reads): `run` refuses them at load; with
  // scan_fp8_weights the doctor finds them all first.
  // NaN or Inf values that `run` refuses at load. Plain tensors of one or two dimensions
  // (norms, biases, hc_*, ape, sinks: small beside the weights) are always read, F8_E4M3 ones
  // too; unquantized linear weights (embeddings, the head, routers) and the 3-D stacked experts
  // of transformers' layout (the large ones) only with scan_fp8_weights.
  static bool float_dtype(io::Dtype d) { return d == io::Dtype::kBF16 || d == io::Dtype::kF32; }
  void check_float_tensor(const TensorRef& t, bool plain) {
    const io::Dtype dt = t.info->dtype;
    if (plain && t.info->shape.size() > 2) plain = false;  // stacked experts: weights, not parameters
    if (!(float_dtype(dt) || (plain && dt == io::Dtype::kF8_E4M3)) || (!plain && !opt_.scan_fp8_weights)) return;
    const int64_t n = t.info->numel();
    constexpr int64_t kChunk = int64_t{1} << 20;  // values converted at a time (io::tensor_to_f32)
    Counts bad;
    for (int64_t first = 0; first < n; first += kChunk) {
      const std::vector<float> v = io::tensor_to_f32(t, first, std::min(kChunk, n - first));
      for (size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i])) bad.add(first + static_cast<int64_t>(i));
    }
    if (!bad.n) return;
    const auto& shape = t.info->shape;
    const int64_t cols = shape.size() >= 2 ? shape.back() : 0;
    const std::string at = cols > 0 ? "[" + std::to_string(bad.first / cols) + ", " + std::to_string(bad.first % cols) + "]"
                                    : "[" + std::to_string(bad.first) + "]";
    add(Severity::kError, "weight-nonfinite", t,
        std::to_string(bad.n) + " NaN or infinite " + io::to_string(t.info->dtype) + " value" + (bad.n == 1 ? "" : "s") +
            ", first at " + at + (shape.size() > 2 ? " (rows of the last dimension)" : "") + ": the outputs would be NaN");
  }

  // The dtypes `run` reads a plain tensor in (model::CheckpointWeights::tensor and the loader
  // of model/weights.cpp): I64 / I32 for the hash-routing tables (tid2eid), and for every other
  // tensor a float dtype io::tensor_to_f32 reads (BF16, F32, F8_E4M3). Anything else run
  // refuses at load: integers as float parameters, floats as expert ids, F16 or I16 at all.
  static bool plain_float_dtype(io::Dtype d) { return d == io::Dtype::kBF16 || d == io::Dtype::kF32 || d == io::Dtype::kF8_E4M3; }
  void check_plain_dtype(const TensorRef& t) {
    const io::Dtype dt = t.info->dtype;
    const std::string& n = t.info->name;
    if (n.ends_with(".tid2eid")) {
      if (!expert_id_dtype(dt))
        add(Severity::kError, "tid2eid-range", t, std::string("is ") + io::to_string(dt) + ", expected I64 or I32 expert ids: `run` refuses it at load");
      return;
    }
    if (plain_float_dtype(dt)) return;
    add(Severity::kError, "dtype", t,
        std::string("is ") + io::to_string(dt) +
            (expert_id_dtype(dt) ? ", integers where `run` reads float parameters"
                                 : ", which `run` cannot read as fp32") +
            " (BF16, F32 or F8_E4M3): `run` refuses it at load");
  }

  // An unquantized linear weight: load_matrix reads BF16 and F32 only (F16 is refused).
  void check_linear_dtype(const LinearTensors& l) {
    const io::Dtype dt = l.weight->info->dtype;
    if (l.format != MatrixFormat::kBF16 || dt == io::Dtype::kBF16 || dt == io::Dtype::kF32) return;
    add(Severity::kError, "dtype", *l.weight,
        std::string("unquantized weight stored as ") + io::to_string(dt) +
            ": `run` reads BF16 or F32 only (F16 weights are not supported) and refuses it at load");
  }

  void check_fp8_weight(const LinearTensors& l) {
    if (!opt_.scan_fp8_weights || l.format != MatrixFormat::kFP8Block) return;
    const auto bytes = l.weight->bytes();
    Counts nan;
    for (size_t i = 0; i < bytes.size(); ++i)
      if (e4m3_is_nan(bytes[i])) nan.add(static_cast<int64_t>(i));
    if (nan.n)
      add(Severity::kError, "weight-nan", *l.weight,
          std::to_string(nan.n) + " e4m3 NaN code" + (nan.n == 1 ? "" : "s") + ", first at [" + std::to_string(nan.first / l.cols) + ", " +
              std::to_string(nan.first % l.cols) + "]");
  }

  void check_global(const LinearTensors& l) {
    if (l.format != MatrixFormat::kNVFP4 || !l.global_scale) return;
    const TensorRef& g = *l.global_scale;
    if (g.info->dtype != io::Dtype::kF32 || g.info->numel() != 1) {
      add(Severity::kError, "global-scale", g, std::string("is ") + io::to_string(g.info->dtype) + " " + shape_str(g.info->shape) + ", expected one F32 value");
      return;
    }
    // Read as `run` reads it (linear_global_scale: io::scalar_f32, shape [] or [1]), so that
    // the doctor accepts exactly the shapes run accepts and reports the others.
    float v = 0.0f;
    try {
      v = io::scalar_f32(g);
    } catch (const io::CheckpointError&) {
      add(Severity::kError, "global-scale", g,
          std::string("is ") + io::to_string(g.info->dtype) + " " + shape_str(g.info->shape) +
              ", expected an F32 scalar (shape [] or [1]): `run` refuses it at load");
      return;
    }
    ++r_.global_scales_checked;
    const std::string name = l.global_is_reciprocal ? "weight_global_scale " : "weight_scale_2 ";
    if (std::string why = bad_scalar(v); !why.empty()) {
      add(Severity::kError, "global-scale", g, name + why);
      return;
    }
    // The largest weight it can make, 6 (e2m1) x 448 (e4m3) x the weight's global scale.
    const double eff = l.global_is_reciprocal ? 1.0 / static_cast<double>(v) : static_cast<double>(v);
    if (static_cast<double>(kNvfp4GlobalMax) * eff > std::numeric_limits<float>::max())
      add(Severity::kError, "global-scale", g,
          name + fmt(v) + ": its largest weights (6 x 448 x " + fmt(eff) + " = " + fmt(kNvfp4GlobalMax * eff) + ") overflow fp32");
  }

  void check_input(const LinearTensors& l) {
    if (!l.input_scale) return;
    const TensorRef& t = *l.input_scale;
    if (t.info->dtype != io::Dtype::kF32 || t.info->numel() != 1) {
      add(Severity::kError, "input-scale", t, std::string("is ") + io::to_string(t.info->dtype) + " " + shape_str(t.info->shape) + ", expected one F32 value");
      return;
    }
    ++r_.global_scales_checked;
    // `run` does not read input scales (weights/linear.cpp only attaches them), so any shape
    // of one F32 value is that value.
    float raw = 0.0f;
    std::memcpy(&raw, t.bytes().data(), 4);
    if (std::string why = bad_scalar(raw); !why.empty()) {
      const bool overflow = why.find("reciprocal") != std::string::npos || why.find("denormal") != std::string::npos;
      add(Severity::kError, overflow ? "input-scale-overflow" : "input-scale", t,
          std::string(l.input_is_reciprocal ? "input_global_scale " : "input_scale ") + why +
              (overflow ? ": 1/input_scale is not a usable fp32 activation global scale" : ""));
      return;
    }
    const float input_scale = l.input_is_reciprocal ? 1.0f / raw : raw;
    const float saturating_amax = kNvfp4GlobalMax * input_scale;  // block amax where the e4m3 scale hits 448
    if (saturating_amax < opt_.typical_activation_amax)
      add(Severity::kWarning, "input-scale-saturation", t,
          "input_scale " + fmt(input_scale) + " saturates every activation block with amax above " + fmt(saturating_amax) +
              " (typical activations reach " + fmt(opt_.typical_activation_amax) + ")");
  }

  void check_fused(const std::map<std::string, const LinearTensors*>& by_canon) {
    auto pair = [&](const std::string& a_suffix, const std::string& b_suffix, const char* a_name, const char* b_name) {
      for (const auto& [canon, la] : by_canon) {
        if (canon.size() < a_suffix.size() || canon.compare(canon.size() - a_suffix.size(), a_suffix.size(), a_suffix) != 0) continue;
        const auto it = by_canon.find(canon.substr(0, canon.size() - a_suffix.size()) + b_suffix);
        if (it == by_canon.end()) continue;
        const LinearTensors* lb = it->second;
        if (la->format != MatrixFormat::kNVFP4 || lb->format != MatrixFormat::kNVFP4 || !la->global_scale || !lb->global_scale) continue;
        float ga, gb;
        try {
          ga = linear_global_scale(*la);
          gb = linear_global_scale(*lb);
        } catch (const io::CheckpointError&) {
          continue;  // reported by check_global
        }
        if (ga == gb) continue;
        const double hi = std::max(ga, gb), lo = std::min(ga, gb);
        add(Severity::kWarning, "fused-global-scale", *la->global_scale,
            std::string(a_name) + " " + fmt(ga) + " vs " + b_name + " " + fmt(gb) + " (" + lb->global_scale->info->name +
                "): one scale shared by both parts would be off by " + fmt((hi / lo - 1.0) * 100.0) +
                "% on one of them; fp4moe keeps one global scale per part");
      }
    };
    pair(".w1", ".w3", "gate (w1)", "up (w3)");
    pair("attn.wq_a", "attn.wkv", "q_a (wq_a)", "kv (wkv)");
  }

 private:
  DoctorReport& r_;
  const DoctorOptions& opt_;
};

std::string actual_algo(const LinearTensors& l) {
  switch (l.format) {
    case MatrixFormat::kNVFP4: return "NVFP4";
    case MatrixFormat::kMXFP4: return "MXFP4";
    case MatrixFormat::kFP8Block: return "FP8";
    case MatrixFormat::kBF16: return "";
  }
  return "";
}

}  // namespace

const char* to_string(Severity s) { return s == Severity::kError ? "error" : "warning"; }

int64_t DoctorReport::errors() const {
  int64_t n = 0;
  for (const Finding& f : findings) n += f.severity == Severity::kError;
  return n;
}
int64_t DoctorReport::warnings() const { return static_cast<int64_t>(findings.size()) - errors(); }

std::vector<ExpectedTensor> expected_deepseek_v4(const io::DeepSeekV4Config& c, bool stacked_experts) {
  std::vector<ExpectedTensor> e;
  auto lin = [&](std::string n, int64_t out, int64_t in) { e.push_back({std::move(n), true, {out, in}}); };
  auto plain = [&](std::string n, std::vector<int64_t> s) { e.push_back({std::move(n), false, std::move(s)}); };
  const int64_t H = c.hidden_size, n = c.hc_mult, hd = c.head_dim, I = c.moe_intermediate_size, E = c.n_routed_experts;
  const int64_t mix = (2 + n) * n;
  lin("embed", c.vocab_size, H);
  lin("head", c.vocab_size, H);
  plain("norm.weight", {H});
  plain("hc_head_fn", {n, n * H});
  plain("hc_head_base", {n});
  plain("hc_head_scale", {1});
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const std::string p = "layers." + std::to_string(L) + ".";
    plain(p + "attn_norm.weight", {H});
    plain(p + "ffn_norm.weight", {H});
    for (const char* hc : {"hc_attn_", "hc_ffn_"}) {
      plain(p + hc + "fn", {mix, n * H});
      plain(p + hc + "base", {mix});
      plain(p + hc + "scale", {3});
    }
    lin(p + "attn.wq_a", c.q_lora_rank, H);
    plain(p + "attn.q_norm.weight", {c.q_lora_rank});
    lin(p + "attn.wq_b", c.num_attention_heads * hd, c.q_lora_rank);
    lin(p + "attn.wkv", hd, H);
    plain(p + "attn.kv_norm.weight", {hd});
    lin(p + "attn.wo_a", c.o_groups * c.o_lora_rank, c.num_attention_heads * hd / c.o_groups);
    lin(p + "attn.wo_b", H, c.o_groups * c.o_lora_rank);
    plain(p + "attn.attn_sink", {c.num_attention_heads});
    const io::AttentionType t = c.layer_types[static_cast<size_t>(L)];
    if (t == io::AttentionType::kCSA) {
      const int64_t ihd = c.index_head_dim, r = c.compress_rate_csa;
      lin(p + "attn.compressor.wkv", 2 * hd, H);
      lin(p + "attn.compressor.wgate", 2 * hd, H);
      plain(p + "attn.compressor.ape", {r, 2 * hd});
      plain(p + "attn.compressor.norm.weight", {hd});
      lin(p + "attn.indexer.compressor.wkv", 2 * ihd, H);
      lin(p + "attn.indexer.compressor.wgate", 2 * ihd, H);
      plain(p + "attn.indexer.compressor.ape", {r, 2 * ihd});
      plain(p + "attn.indexer.compressor.norm.weight", {ihd});
      lin(p + "attn.indexer.wq_b", c.index_n_heads * ihd, c.q_lora_rank);
      lin(p + "attn.indexer.weights_proj", c.index_n_heads, H);
    } else if (t == io::AttentionType::kHCA) {
      lin(p + "attn.compressor.wkv", hd, H);
      lin(p + "attn.compressor.wgate", hd, H);
      plain(p + "attn.compressor.ape", {c.compress_rate_hca, hd});
      plain(p + "attn.compressor.norm.weight", {hd});
    }
    lin(p + "ffn.gate", E, H);
    if (c.mlp_layer_types[static_cast<size_t>(L)] == io::MlpType::kHashMoe) plain(p + "ffn.gate.tid2eid", {c.vocab_size, c.num_experts_per_tok});
    else plain(p + "ffn.gate.bias", {E});
    if (stacked_experts) {
      plain(p + "ffn.experts.gate_up_proj", {E, 2 * I, H});
      plain(p + "ffn.experts.down_proj", {E, H, I});
    } else {
      for (int64_t x = 0; x < E; ++x) {
        const std::string q = p + "ffn.experts." + std::to_string(x) + ".";
        lin(q + "w1", I, H);
        lin(q + "w2", H, I);
        lin(q + "w3", I, H);
      }
    }
    lin(p + "ffn.shared_experts.w1", I, H);
    lin(p + "ffn.shared_experts.w2", H, I);
    lin(p + "ffn.shared_experts.w3", I, H);
  }
  return e;
}

namespace {

void expected_routed_experts(std::vector<ExpectedTensor>& e, const std::string& p, int64_t E, int64_t I, int64_t H, bool stacked) {
  if (stacked) {
    e.push_back({p + "ffn.experts.gate_up_proj", false, {E, 2 * I, H}});
    e.push_back({p + "ffn.experts.down_proj", false, {E, H, I}});
    return;
  }
  for (int64_t x = 0; x < E; ++x) {
    const std::string q = p + "ffn.experts." + std::to_string(x) + ".";
    e.push_back({q + "w1", true, {I, H}});
    e.push_back({q + "w2", true, {H, I}});
    e.push_back({q + "w3", true, {I, H}});
  }
}

void expected_dense_mlp(std::vector<ExpectedTensor>& e, const std::string& p, int64_t I, int64_t H) {
  e.push_back({p + "mlp.gate_proj", true, {I, H}});
  e.push_back({p + "mlp.up_proj", true, {I, H}});
  e.push_back({p + "mlp.down_proj", true, {H, I}});
}

}  // namespace

// Names are canonical (weights/names.h), so the transformers renames shared with V4
// (input_layernorm -> attn_norm, self_attn.q_a_proj -> attn.wq_a, mlp.gate -> ffn.gate, ...)
// appear here in their native form.
std::vector<ExpectedTensor> expected_deepseek_v3(const io::DeepSeekV3Config& c, bool stacked_experts) {
  std::vector<ExpectedTensor> e;
  const int64_t H = c.hidden_size, qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  e.push_back({"embed", true, {c.vocab_size, H}});
  e.push_back({"head", true, {c.vocab_size, H}});
  e.push_back({"norm.weight", false, {H}});
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const std::string p = "layers." + std::to_string(L) + ".";
    e.push_back({p + "attn_norm.weight", false, {H}});
    e.push_back({p + "ffn_norm.weight", false, {H}});
    if (c.q_lora_rank) {
      e.push_back({p + "attn.wq_a", true, {*c.q_lora_rank, H}});
      e.push_back({p + "self_attn.q_a_layernorm.weight", false, {*c.q_lora_rank}});
      e.push_back({p + "attn.wq_b", true, {c.num_attention_heads * qk, *c.q_lora_rank}});
    } else {
      e.push_back({p + "self_attn.q_proj", true, {c.num_attention_heads * qk, H}});
    }
    e.push_back({p + "self_attn.kv_a_proj_with_mqa", true, {c.kv_lora_rank + c.qk_rope_head_dim, H}});
    e.push_back({p + "self_attn.kv_a_layernorm.weight", false, {c.kv_lora_rank}});
    e.push_back({p + "self_attn.kv_b_proj", true, {c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}});
    e.push_back({p + "self_attn.o_proj", true, {H, c.num_attention_heads * c.v_head_dim}});
    if (L < c.first_k_dense_replace || L % c.moe_layer_freq != 0) {
      expected_dense_mlp(e, p, c.intermediate_size, H);
      continue;
    }
    const int64_t I = c.moe_intermediate_size, S = I * std::max<int64_t>(c.n_shared_experts, 1);
    e.push_back({p + "ffn.gate", true, {c.n_routed_experts, H}});
    e.push_back({p + "ffn.gate.bias", false, {c.n_routed_experts}});
    expected_routed_experts(e, p, c.n_routed_experts, I, H, stacked_experts);
    e.push_back({p + "ffn.shared_experts.w1", true, {S, H}});
    e.push_back({p + "ffn.shared_experts.w2", true, {H, S}});
    e.push_back({p + "ffn.shared_experts.w3", true, {S, H}});
  }
  return e;
}

std::vector<ExpectedTensor> expected_qwen3_moe(const io::Qwen3MoeConfig& c, bool stacked_experts) {
  std::vector<ExpectedTensor> e;
  const int64_t H = c.hidden_size, hd = c.head_dim;
  e.push_back({"embed", true, {c.vocab_size, H}});
  if (!c.tie_word_embeddings) e.push_back({"head", true, {c.vocab_size, H}});
  e.push_back({"norm.weight", false, {H}});
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const std::string p = "layers." + std::to_string(L) + ".";
    e.push_back({p + "attn_norm.weight", false, {H}});
    e.push_back({p + "ffn_norm.weight", false, {H}});
    e.push_back({p + "self_attn.q_proj", true, {c.num_attention_heads * hd, H}});
    e.push_back({p + "self_attn.k_proj", true, {c.num_key_value_heads * hd, H}});
    e.push_back({p + "self_attn.v_proj", true, {c.num_key_value_heads * hd, H}});
    e.push_back({p + "self_attn.o_proj", true, {H, c.num_attention_heads * hd}});
    e.push_back({p + "self_attn.q_norm.weight", false, {hd}});
    e.push_back({p + "self_attn.k_norm.weight", false, {hd}});
    const bool dense = std::find(c.mlp_only_layers.begin(), c.mlp_only_layers.end(), L) != c.mlp_only_layers.end() ||
                       (L + 1) % c.decoder_sparse_step != 0;
    if (dense) {
      expected_dense_mlp(e, p, c.intermediate_size, H);
      continue;
    }
    e.push_back({p + "ffn.gate", true, {c.num_experts, H}});
    expected_routed_experts(e, p, c.num_experts, c.moe_intermediate_size, H, stacked_experts);
  }
  return e;
}

DoctorReport run_doctor(const io::Checkpoint& ckpt, const io::ModelConfig* config, const io::QuantScheme& scheme,
                        const DoctorOptions& opt, const DoctorProgress& progress) {
  DoctorReport r;
  Doctor d(r, opt);
  const CheckpointLayout layout = scan_layout(ckpt);
  for (const LayoutProblem& p : layout.problems) r.findings.push_back({Severity::kError, p.check, p.tensor, p.file, p.message});

  uint64_t total = 0, done = 0;
  auto bytes_read = [&](const LinearTensors& l) {
    uint64_t n = l.scale ? l.scale->info->nbytes() : 0;
    if (opt.scan_fp8_weights && (l.format != MatrixFormat::kBF16 || Doctor::float_dtype(l.weight->info->dtype)))
      n += l.weight->info->nbytes();  // FP8 / FP4 codes, BF16 / F32 values
    return n;
  };
  auto plain_bytes = [&](const io::TensorRef& t) -> uint64_t {
    return opt.scan_fp8_weights && Doctor::float_dtype(t.info->dtype) ? t.info->nbytes() : 0;
  };
  for (const LinearTensors& l : layout.linears) total += bytes_read(l);
  for (const io::TensorRef& t : layout.plain) total += plain_bytes(t);
  std::map<std::string, const LinearTensors*> by_canon;
  for (const LinearTensors& l : layout.linears) {
    ++r.linears;
    by_canon[canonical_name(l.module)] = &l;
    d.guarded(*l.weight, [&] {
      d.check_linear_dtype(l);
      const bool may_overflow = l.scale && d.check_block_scales(l);
      d.check_fp8_weight(l);
      d.check_float_tensor(*l.weight, /*plain=*/false);
      d.check_global(l);
      d.check_representable(l, may_overflow);
      d.check_input(l);
    });
    if (scheme.kind != io::SchemeKind::kDeepSeekNative && component_of(canonical_name(l.module)) != Component::kEmbedding) {
      const std::string want = scheme.algo_for(l.module), have = actual_algo(l);
      if (want != have)
        d.add(Severity::kError, "scheme-mismatch", *l.weight,
              "stored as " + (have.empty() ? std::string("unquantized ") + io::to_string(l.weight->info->dtype) : have) + " but " +
                  (scheme.source.empty() ? std::string("the checkpoint has no quantization config") : scheme.source) + " says " +
                  (want.empty() ? std::string("unquantized") : want));
    } else if (scheme.kind == io::SchemeKind::kDeepSeekNative && l.format == MatrixFormat::kNVFP4) {
      // DeepSeek's own format is FP8 128x128 blocks (V4's routed experts MXFP4): never NVFP4.
      // (Its scale_fmt is not checked against the scales' dtype: DeepSeek-V3.1 declares ue8m0
      // and stores power-of-two scales as fp32.)
      d.add(Severity::kError, "scheme-mismatch", *l.weight,
            "stored as NVFP4 but " + scheme.source + " describes DeepSeek's FP8-block format (MXFP4 routed experts), which has no NVFP4 layers");
    }
    done += bytes_read(l);
    if (progress) progress(done, total);
  }
  for (const io::TensorRef& t : layout.plain) {
    d.guarded(t, [&] {
      if (component_of(canonical_name(t.info->name)) != Component::kMtp) d.check_plain_dtype(t);  // run never reads MTP layers
      d.check_float_tensor(t, /*plain=*/true);
    });
    done += plain_bytes(t);
    if (progress && plain_bytes(t)) progress(done, total);
  }
  d.check_fused(by_canon);

  // With an index, only the shards it names are read: another .safetensors file in the folder
  // (an older shard, a stray download) is ignored by every command, so it is said.
  if (!ckpt.is_single_file() && fs::exists(ckpt.dir() / "model.safetensors.index.json")) {
    std::set<fs::path> read;
    for (const auto& f : ckpt.files()) read.insert(fs::path(f->path()).filename());
    std::error_code ec;
    std::vector<fs::path> stray;
    for (const auto& e : fs::directory_iterator(ckpt.dir(), ec))
      if (e.path().extension() == ".safetensors" && !read.count(e.path().filename())) stray.push_back(e.path());
    std::sort(stray.begin(), stray.end());
    for (const fs::path& f : stray)
      r.findings.push_back({Severity::kWarning, "stray-file", "", f.string(),
                            "not named by model.safetensors.index.json: no command reads its tensors"});
  }

  if (!config) {
    r.findings.push_back({Severity::kWarning, "no-config", "", ckpt.dir().string(), "no config.json: missing/extra tensor and shape checks skipped"});
  } else {
    bool stacked = false;
    for (const io::TensorRef& t : layout.plain) stacked |= canonical_name(t.info->name).find("ffn.experts.gate_up_proj") != std::string::npos;
    struct Actual {
      bool linear;
      std::vector<int64_t> shape;
      io::TensorRef ref;
    };
    std::map<std::string, Actual> actual;
    for (const LinearTensors& l : layout.linears) actual[canonical_name(l.module)] = {true, {l.rows, l.cols}, *l.weight};
    for (const io::TensorRef& t : layout.plain) actual[canonical_name(t.info->name)] = {false, t.info->shape, t};
    for (const io::TensorRef& w : layout.broken) {  // present, already reported; shape unknown
      const std::string& n = w.info->name;
      actual[canonical_name(n.substr(0, n.rfind('.')))] = {true, {}, w};
    }
    std::set<std::string> expected_names;
    const std::string cfg = (ckpt.dir() / "config.json").string();
    const std::vector<ExpectedTensor> expected = config->v4   ? expected_deepseek_v4(*config->v4, stacked)
                                                 : config->v3 ? expected_deepseek_v3(*config->v3, stacked)
                                                              : expected_qwen3_moe(*config->qwen3, stacked);
    for (const ExpectedTensor& e : expected) {
      expected_names.insert(e.name);
      const auto it = actual.find(e.name);
      if (it == actual.end() || it->second.linear != e.linear) {
        r.findings.push_back({Severity::kError, "missing-tensor", e.name + (e.linear ? ".weight" : ""), ckpt.dir().string(),
                              std::string("expected by ") + cfg + " (" + (e.linear ? "linear " : "") + shape_str(e.shape) + "), not in the checkpoint"});
        continue;
      }
      // Plain tensors compare with their dimensions of size 1 aside ([1, n] holds an [n]), as
      // run's loader reads them; linear layers compare exactly.
      auto squeezed = [&](const std::vector<int64_t>& s) {
        if (e.linear) return s;
        std::vector<int64_t> q;
        for (int64_t v : s)
          if (v != 1) q.push_back(v);
        return q;
      };
      if (!it->second.shape.empty() && squeezed(it->second.shape) != squeezed(e.shape))
        d.add(Severity::kError, "shape-mismatch", it->second.ref,
              (e.linear ? "linear is " : "tensor is ") + shape_str(it->second.shape) + ", " + cfg + " implies " + shape_str(e.shape));
      else if (config->v4 && e.name.ends_with(".tid2eid"))
        d.check_expert_ids(it->second.ref, config->v4->n_routed_experts);
    }
    for (const auto& [name, a] : actual) {
      if (expected_names.count(name) || component_of(name) == Component::kMtp) continue;
      // DeepSeek-V3 stores its MTP module as the layers past num_hidden_layers.
      if (config->v3 && name.starts_with("layers.") && std::atoll(name.c_str() + 7) >= config->v3->num_hidden_layers) continue;
      d.add(Severity::kError, "extra-tensor", a.ref,
            std::string("not part of a ") + io::to_string(config->arch) + " model with this config.json");
    }
  }
  return r;
}

}  // namespace fp4moe::weights
