// Linear layers of a checkpoint (see linear.h).
#include "weights/linear.h"

#include <cmath>
#include <cstring>
#include <map>

#include "formats/blocks.h"
#include "formats/quantize.h"

namespace fp4moe::weights {
namespace {

using io::Dtype;
using io::TensorRef;

// Suffixes that attach a tensor to a linear module, longest first so ".weight_scale_2" is not
// read as ".weight_scale" + "_2".
constexpr std::string_view kSuffixes[] = {".weight_global_scale", ".input_global_scale", ".weight_scale_inv",
                                          ".weight_scale_2", ".weight_packed", ".weight_scale", ".input_scale",
                                          ".weight", ".scale"};

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

[[noreturn]] void fail(const TensorRef& t, const std::string& msg) {
  throw io::CheckpointError(io::ErrorKind::kUnsupported, t.file->path(), "tensor '" + t.info->name + "': " + msg);
}

bool is_float_weight(Dtype d) { return d == Dtype::kBF16 || d == Dtype::kF32 || d == Dtype::kF16; }

}  // namespace

CheckpointLayout scan_layout(const io::Checkpoint& ckpt) {
  // module -> suffix -> tensor
  std::map<std::string, std::map<std::string, TensorRef>> groups;
  for (const std::string& name : ckpt.names()) {
    std::string_view suffix;
    for (std::string_view s : kSuffixes)
      if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
        suffix = s;
        break;
      }
    const TensorRef t = *ckpt.find(name);
    if (suffix.empty()) {
      groups[name][""] = t;
      continue;
    }
    groups[name.substr(0, name.size() - suffix.size())][std::string(suffix)] = t;
  }

  CheckpointLayout out;
  for (auto& group : groups) {
    // Named, not structured bindings: lambdas below capture them (clang 14 cannot capture bindings).
    const std::string& module = group.first;
    auto& parts = group.second;
    auto take = [&](const char* s) -> std::optional<TensorRef> {
      const auto it = parts.find(s);
      if (it == parts.end()) return std::nullopt;
      TensorRef r = it->second;
      parts.erase(it);
      return r;
    };
    auto problem = [&](const char* check, const TensorRef& t, const std::string& msg) {
      out.problems.push_back({check, t.info->name, t.file->path(), msg});
    };
    LinearTensors l;
    l.module = module;
    std::optional<TensorRef> w = take(".weight_packed");
    const bool ct = w.has_value();
    if (!w) w = take(".weight");
    // Empty tensors stay plain: a zero-size shape may carry any other dimension, even one
    // whose arithmetic would overflow.
    const bool linear2d = w && w->info->shape.size() == 2 && w->info->numel() > 0;
    if (linear2d && (w->info->dtype == Dtype::kU8 || w->info->dtype == Dtype::kI8)) {
      l.weight = w;
      l.rows = w->info->shape[0];
      l.cols = w->info->shape[1] * 2;
      std::optional<TensorRef> s = take(".weight_scale");
      if (!s) s = take(".scale");
      if (!s) s = take(".weight_scale_inv");
      const std::optional<TensorRef> g = ct ? take(".weight_global_scale") : take(".weight_scale_2");
      if (!s) {
        problem("missing-tensor", *w, "packed FP4 weight without block scales (" + module + ".weight_scale)");
        out.broken.push_back(*w);
        continue;
      }
      l.scale = s;
      if (s->info->dtype == Dtype::kF8_E4M3) {
        l.format = MatrixFormat::kNVFP4;
        l.scale_kind = ScaleKind::kE4m3;
        l.global_scale = g;
        l.global_is_reciprocal = ct;
        if (!g) problem("missing-tensor", *w, std::string("NVFP4 weight without its global scale (") + module +
                                                  (ct ? ".weight_global_scale)" : ".weight_scale_2)"));
      } else if (s->info->dtype == Dtype::kF8_E8M0 || s->info->dtype == Dtype::kU8) {
        l.format = MatrixFormat::kMXFP4;
        l.scale_kind = ScaleKind::kUe8m0;
        if (g) problem("extra-tensor", *g, "MXFP4 has no global scale, but this tensor is one");
      } else {
        problem("dtype", *s, std::string("block scales of a packed FP4 weight are ") + io::to_string(s->info->dtype) +
                                 " (F8_E4M3 for NVFP4, F8_E8M0 or U8 for MXFP4)");
        out.broken.push_back(*w);
        continue;
      }
      const int64_t block = l.format == MatrixFormat::kNVFP4 ? kNvfp4Block : kMxfp4Block;
      const std::vector<int64_t> want = {l.rows, l.cols / block};
      if (l.cols % block != 0 || s->info->shape != want) {
        problem("scale-shape", *s, "block scales are " + shape_str(s->info->shape) + ", expected " + shape_str(want) +
                                       " for a weight of " + std::to_string(l.rows) + " x " + std::to_string(l.cols) + " values");
        out.broken.push_back(*w);
        continue;
      }
    } else if (linear2d && w->info->dtype == Dtype::kF8_E4M3) {
      l.weight = w;
      l.rows = w->info->shape[0];
      l.cols = w->info->shape[1];
      l.format = MatrixFormat::kFP8Block;
      std::optional<TensorRef> s = take(".scale");
      if (!s) s = take(".weight_scale_inv");
      if (!s) s = take(".weight_scale");
      if (!s) {
        problem("missing-tensor", *w, "FP8 weight without block scales (" + module + ".scale or .weight_scale_inv)");
        out.broken.push_back(*w);
        continue;
      }
      l.scale = s;
      if (s->info->dtype == Dtype::kF32) l.scale_kind = ScaleKind::kF32;
      else if (s->info->dtype == Dtype::kF8_E8M0 || s->info->dtype == Dtype::kU8) l.scale_kind = ScaleKind::kUe8m0;
      else {
        problem("dtype", *s, std::string("FP8 block scales are ") + io::to_string(s->info->dtype) + " (F32 or F8_E8M0)");
        out.broken.push_back(*w);
        continue;
      }
      const std::vector<int64_t> want = {(l.rows + 127) / 128, (l.cols + 127) / 128};
      if (s->info->shape != want) {
        problem("scale-shape", *s, "FP8 block scales are " + shape_str(s->info->shape) + ", expected " + shape_str(want));
        out.broken.push_back(*w);
        continue;
      }
    } else if (linear2d && is_float_weight(w->info->dtype)) {
      l.weight = w;
      l.rows = w->info->shape[0];
      l.cols = w->info->shape[1];
    } else if (w) {
      out.plain.push_back(*w);  // a norm, a bias-like vector, a stacked 3-D expert tensor...
    }
    if (l.weight) {
      if (auto in = take(".input_scale")) l.input_scale = in;
      else if (auto ig = take(".input_global_scale")) {
        l.input_scale = ig;
        l.input_is_reciprocal = true;
      }
    }
    // Whatever is left: plain tensors when the module has no weight, strays otherwise.
    for (const auto& [suffix, t] : parts) {
      if (!l.weight && suffix != "" && suffix != ".scale" && suffix != ".weight")  // ".scale" alone also names hc scales
        problem("extra-tensor", t, "a '" + suffix + "' companion with no linear weight beside it (" + module + ".weight)");
      else if (!l.weight) out.plain.push_back(t);
      else problem("extra-tensor", t, "companion '" + suffix + "' does not belong to a " + io::to_string(l.weight->info->dtype) + " weight");
    }
    if (l.weight) out.linears.push_back(std::move(l));
  }
  return out;
}

int64_t linear_bytes(const LinearTensors& l) {
  int64_t n = 0;
  for (const auto* t : {&l.weight, &l.scale, &l.global_scale, &l.input_scale})
    if (*t) n += static_cast<int64_t>((*t)->info->nbytes());
  return n;
}

float linear_global_scale(const LinearTensors& l) {
  if (l.format != MatrixFormat::kNVFP4) return 1.0f;
  if (!l.global_scale) fail(*l.weight, "NVFP4 weight without a global scale");
  const float g = io::scalar_f32(*l.global_scale);
  try {
    if (l.global_is_reciprocal) return ct_global_scale_to_modelopt(g);
    modelopt_global_scale_to_ct(g);  // throws unless g is a positive normal number with a finite reciprocal
    return g;
  } catch (const std::invalid_argument& e) {
    fail(*l.global_scale, e.what());
  }
}

Matrix load_matrix(const LinearTensors& l) {
  if (!l.weight) throw std::invalid_argument("load_matrix: module '" + l.module + "' has no weight");
  const TensorRef& w = *l.weight;
  Matrix m;
  if (l.format == MatrixFormat::kBF16) {
    if (w.info->dtype == Dtype::kF16) fail(w, "F16 weights are not supported (BF16 or F32)");
    const std::vector<float> v = io::tensor_to_f32(w);
    m = make_bf16_matrix(v.data(), l.rows, l.cols);  // exact for BF16 input, rounds F32
  } else {
    m.format = l.format;
    m.scale_kind = l.scale_kind;
    m.rows = l.rows;
    m.cols = l.cols;
    const auto wb = w.bytes();
    const auto sb = l.scale->bytes();
    m.data.assign(wb.begin(), wb.end());
    m.scales.assign(sb.begin(), sb.end());
    m.ranges = {OutputRange{0, linear_global_scale(l)}};
  }
  try {
    validate_matrix(m.view());
  } catch (const std::invalid_argument& e) {
    fail(w, e.what());
  }
  return m;
}

Matrix load_fused(std::span<const LinearTensors* const> parts) {
  std::vector<Matrix> ms;
  ms.reserve(parts.size());
  for (const LinearTensors* p : parts) ms.push_back(load_matrix(*p));
  std::vector<const Matrix*> ptrs;
  for (const Matrix& m : ms) ptrs.push_back(&m);
  return concat_rows(ptrs);
}

}  // namespace fp4moe::weights
