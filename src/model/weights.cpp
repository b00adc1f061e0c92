// Loading DeepSeek-V4 weights by name (see weights.h).
#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "formats/blocks.h"
#include "formats/quantize.h"

namespace fp4moe::model {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::vector<int64_t> squeezed(const std::vector<int64_t>& s) {
  std::vector<int64_t> r;
  for (int64_t d : s)
    if (d != 1) r.push_back(d);
  return r;
}

// Looks tensors up under a list of candidate names (first = the canonical one).
class Loader {
 public:
  Loader(const WeightSource& src) : src_(src) {}

  std::string pick(const std::vector<std::string>& names) const {
    for (const auto& n : names)
      if (src_.contains(n)) return n;
    std::string tried;
    for (size_t i = 1; i < names.size(); ++i) tried += (i > 1 ? ", " : "") + names[i];
    throw std::invalid_argument("missing tensor " + names[0] + " in " + src_.describe() +
                                (tried.empty() ? "" : " (also tried " + tried + ")"));
  }
  bool any(const std::vector<std::string>& names) const {
    return std::any_of(names.begin(), names.end(), [&](const std::string& n) { return src_.contains(n); });
  }

  // A plain tensor of the given shape (dimensions of size 1 aside: [1, n] reads as [n]). Its
  // dtype must be an integer one for the integer tables (tid2eid) and a float one otherwise:
  // integers read as float parameters (or floats as expert ids) would run, with wrong values.
  std::vector<float> vec(const std::vector<std::string>& names, std::vector<int64_t> shape, bool integer = false) const {
    const std::string n = pick(names);
    HostTensor t = src_.tensor(n);
    if ((t.dtype == StoredDtype::kI64) != integer)
      throw std::invalid_argument("tensor " + n + " in " + src_.locate(n) + " is stored as " +
                                  (integer ? "floats" : "integers") + "; it holds " +
                                  (integer ? "expert ids (an integer dtype, I64 or I32)" : "float parameters (a float dtype)"));
    // Compared dimension by dimension, so no product of the config's sizes is ever formed;
    // equal shapes mean equal element counts (a file's own count is checked by io, an
    // in-memory tensor's here).
    if (squeezed(t.shape) != squeezed(shape) || int64_t(t.values.size()) != t.numel())
      throw std::invalid_argument("tensor " + n + " in " + src_.locate(n) + " has shape " + shape_str(t.shape) +
                                  ", expected " + shape_str(shape) + " from the config");
    for (size_t i = 0; i < t.values.size(); ++i)
      if (!std::isfinite(t.values[i]))
        throw std::invalid_argument("tensor " + n + " in " + src_.locate(n) + ": value " + std::to_string(i) +
                                    " is not finite; the model's outputs would be NaN (fp4moe doctor lists every finding)");
    return std::move(t.values);
  }

  Matrix mat(const std::vector<std::string>& names, int64_t rows, int64_t cols) const {
    const std::string n = pick(names);
    Matrix m = src_.matrix(n);
    if (m.rows != rows || m.cols != cols)
      throw std::invalid_argument("tensor " + n + " in " + src_.locate(n) + " has shape [" + std::to_string(m.rows) +
                                  ", " + std::to_string(m.cols) + "], expected [" + std::to_string(rows) + ", " +
                                  std::to_string(cols) + "] from the config");
    validate_matrix(m.view());
    // A NaN scale or weight would make every output of the layer NaN, a negative scale flip
    // weights: refuse them here, as the CUDA backend's repacking does.
    if (const std::string bad = matrix_bad_value(m.view()); !bad.empty())
      throw std::invalid_argument("tensor " + n + " in " + src_.locate(n) + ": " + bad + " (fp4moe doctor lists every finding)");
    return m;
  }

 private:
  const WeightSource& src_;
};

// Candidate names for a per-layer tensor: each suffix under "model.layers.N." and "layers.N.".
std::vector<std::string> L(int64_t i, std::initializer_list<const char*> suffixes) {
  std::vector<std::string> out;
  for (const char* pre : {"model.layers.", "layers."})
    for (const char* s : suffixes) out.push_back(pre + std::to_string(i) + "." + s);
  return out;
}
std::vector<std::string> G(std::initializer_list<const char*> names) {
  std::vector<std::string> out;
  for (const char* s : names) {
    out.push_back(std::string("model.") + s);
    out.push_back(s);
  }
  return out;
}

HcWeights load_hc(const Loader& ld, int64_t i, const char* saved, const char* hf, const V4Config& c) {
  const int64_t rows = (2 + c.hc_mult) * c.hc_mult, cols = c.hc_mult * c.hidden_size;
  const std::string s(saved), h(hf);
  auto names = [&](const char* a, const char* b) {
    const std::string x = s + a, y = h + b;
    return L(i, {x.c_str(), y.c_str()});
  };
  HcWeights w;
  w.fn = ld.vec(names("_fn", ".fn"), {rows, cols});
  w.base = ld.vec(names("_base", ".base"), {rows});
  w.scale = ld.vec(names("_scale", ".scale"), {3});
  return w;
}

CompressorWeights load_compressor(const Loader& ld, int64_t i, const std::string& saved, const std::string& hf,
                                  int64_t width, int64_t parts, int64_t ratio, const V4Config& c) {
  auto n = [&](const char* a, const char* b) {
    const std::string x = saved + a, y = hf + b;
    return L(i, {x.c_str(), y.c_str()});
  };
  CompressorWeights w;
  w.width = width;
  w.parts = parts;
  w.wkv = ld.mat(n(".wkv.weight", ".kv_proj.weight"), parts * width, c.hidden_size);
  w.wgate = ld.mat(n(".wgate.weight", ".gate_proj.weight"), parts * width, c.hidden_size);
  w.ape = ld.vec(n(".ape", ".position_bias"), {ratio, parts * width});
  w.norm = ld.vec(n(".norm.weight", ".kv_norm.weight"), {width});
  return w;
}

}  // namespace

GateUp join_gate_up(Matrix gate, Matrix up) {
  GateUp gu;
  const bool stackable = gate.format == up.format && gate.scale_kind == up.scale_kind &&
                         (gate.format != MatrixFormat::kFP8Block || gate.rows % kFp8BlockRows == 0);
  if (stackable) {
    const Matrix* parts[] = {&gate, &up};
    gu.fused = concat_rows(parts);
  } else {
    gu.gate = std::move(gate);
    gu.up = std::move(up);
    gu.split = true;
  }
  return gu;
}

Matrix matrix_row_slice(const Matrix& m, int64_t begin, int64_t count) {
  if (begin < 0 || count <= 0 || begin + count > m.rows)
    throw std::invalid_argument("matrix_row_slice: rows out of range");
  Matrix s;
  s.format = m.format;
  s.scale_kind = m.scale_kind;
  s.rows = count;
  s.cols = m.cols;
  const int64_t row_bytes = matrix_data_bytes(m.format, 1, m.cols);
  if (m.format == MatrixFormat::kFP8Block) {
    const bool aligned = begin % kFp8BlockRows == 0;
    const bool inside_one = begin / kFp8BlockRows == (begin + count - 1) / kFp8BlockRows;
    if (!aligned && !inside_one)
      throw std::invalid_argument("matrix_row_slice: an FP8 block-scaled slice must start on a 128-row boundary or "
                                  "lie inside one 128-row block");
    const int64_t sc_row = matrix_scale_bytes(m.format, m.scale_kind, kFp8BlockRows, m.cols);  // one block row
    const int64_t first = begin / kFp8BlockRows, last = (begin + count - 1) / kFp8BlockRows;
    s.scales.assign(m.scales.begin() + first * sc_row, m.scales.begin() + (last + 1) * sc_row);
  } else if (m.format != MatrixFormat::kBF16) {
    const int64_t sc_row = matrix_scale_bytes(m.format, m.scale_kind, 1, m.cols);
    s.scales.assign(m.scales.begin() + begin * sc_row, m.scales.begin() + (begin + count) * sc_row);
  }
  s.data.assign(m.data.begin() + begin * row_bytes, m.data.begin() + (begin + count) * row_bytes);
  s.ranges.clear();
  for (size_t r = 0; r < m.ranges.size(); ++r) {
    const int64_t rb = m.ranges[r].row_begin;
    const int64_t re = r + 1 < m.ranges.size() ? m.ranges[r + 1].row_begin : m.rows;
    const int64_t lo = std::max(rb, begin), hi = std::min(re, begin + count);
    if (lo < hi) s.ranges.push_back(OutputRange{lo - begin, m.ranges[r].global_scale});
  }
  return s;
}

V4Weights load_v4_weights(const V4Config& c, const WeightSource& src) {
  validate_v4_config(c);
  const Loader ld(src);
  const int64_t H = c.hidden_size, D = c.head_dim, nh = c.num_attention_heads, I = c.moe_intermediate_size;
  const int64_t E = c.n_routed_experts, ID = c.index_head_dim;
  V4Weights w;
  w.embed = ld.mat(G({"embed_tokens.weight", "embed.weight"}), c.vocab_size, H);
  w.norm = ld.vec(G({"norm.weight"}), {H});
  w.head = ld.mat({"head.weight", "lm_head.weight", "model.head.weight"}, c.vocab_size, H);
  w.hc_head.fn = ld.vec(G({"hc_head.hc_fn", "hc_head_fn"}), {c.hc_mult, c.hc_mult * H});
  w.hc_head.base = ld.vec(G({"hc_head.hc_base", "hc_head_base"}), {c.hc_mult});
  w.hc_head.scale = ld.vec(G({"hc_head.hc_scale", "hc_head_scale"}), {1});

  w.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LayerWeights& lw = w.layers[static_cast<size_t>(i)];
    const AttnType at = c.layer_types[static_cast<size_t>(i)];
    lw.hc_attn = load_hc(ld, i, "hc_attn", "attn_hc", c);
    lw.hc_ffn = load_hc(ld, i, "hc_ffn", "ffn_hc", c);
    lw.attn_norm = ld.vec(L(i, {"attn_norm.weight", "input_layernorm.weight"}), {H});
    lw.ffn_norm = ld.vec(L(i, {"ffn_norm.weight", "post_attention_layernorm.weight"}), {H});

    AttentionWeights& a = lw.attn;
    a.wq_a = ld.mat(L(i, {"attn.wq_a.weight", "self_attn.q_a_proj.weight"}), c.q_lora_rank, H);
    a.q_norm = ld.vec(L(i, {"attn.q_norm.weight", "self_attn.q_a_norm.weight", "self_attn.q_norm.weight"}),
                      {c.q_lora_rank});
    a.wq_b = ld.mat(L(i, {"attn.wq_b.weight", "self_attn.q_b_proj.weight"}), nh * D, c.q_lora_rank);
    a.wkv = ld.mat(L(i, {"attn.wkv.weight", "self_attn.kv_proj.weight"}), D, H);
    a.kv_norm = ld.vec(L(i, {"attn.norm.weight", "attn.kv_norm.weight", "self_attn.kv_norm.weight"}), {D});
    const int64_t group_in = nh * D / c.o_groups;
    const auto wo_a_names = L(i, {"attn.wo_a.weight", "self_attn.o_a_proj.weight"});
    const Matrix wo_a = ld.mat(wo_a_names, c.o_groups * c.o_lora_rank, group_in);
    try {  // one matrix per output group (an FP8 block-scaled wo_a needs o_lora_rank % 128 == 0)
      for (int64_t g = 0; g < c.o_groups; ++g) a.wo_a.push_back(matrix_row_slice(wo_a, g * c.o_lora_rank, c.o_lora_rank));
    } catch (const std::invalid_argument& e) {
      const std::string n = ld.pick(wo_a_names);
      throw std::invalid_argument("tensor " + n + " in " + src.locate(n) + ": its " + std::to_string(c.o_groups) +
                                  " groups of o_lora_rank " + std::to_string(c.o_lora_rank) + " rows cannot be split: " + e.what());
    }
    a.wo_b = ld.mat(L(i, {"attn.wo_b.weight", "self_attn.o_b_proj.weight"}), H, c.o_groups * c.o_lora_rank);
    a.sinks = ld.vec(L(i, {"attn.attn_sink", "self_attn.sinks", "attn.sinks"}), {nh});
    if (at != AttnType::kSliding) {
      const int64_t parts = at == AttnType::kCSA ? 2 : 1;
      a.compressor = load_compressor(ld, i, "attn.compressor", "self_attn.compressor", D, parts, compress_ratio(c, at), c);
    } else if (ld.any(L(i, {"attn.compressor.wkv.weight", "self_attn.compressor.kv_proj.weight"}))) {
      throw std::invalid_argument("layer " + std::to_string(i) +
                                  " is sliding_attention in the config but the checkpoint has compressor tensors: "
                                  "the config's layer_types / compress_ratios do not match the weights");
    }
    if (at == AttnType::kCSA) {
      a.indexer = load_compressor(ld, i, "attn.indexer.compressor", "self_attn.compressor.indexer", ID, 2, c.compress_rate_csa, c);
      a.index_wq_b = ld.mat(L(i, {"attn.indexer.wq_b.weight", "self_attn.compressor.indexer.q_b_proj.weight"}),
                            c.index_n_heads * ID, c.q_lora_rank);
      a.index_weights_proj =
          ld.mat(L(i, {"attn.indexer.weights_proj.weight", "self_attn.compressor.indexer.weights_proj.weight",
                       "self_attn.compressor.indexer.scorer.weights_proj.weight"}),
                 c.index_n_heads, H);
    }

    MoeWeights& m = lw.moe;
    m.gate = ld.mat(L(i, {"ffn.gate.weight", "mlp.gate.weight"}), E, H);
    if (c.mlp_layer_types[static_cast<size_t>(i)] == MlpType::kMoe) {
      m.bias = ld.vec(L(i, {"ffn.gate.bias", "mlp.gate.e_score_correction_bias"}), {E});
    } else {
      const std::vector<float> t = ld.vec(L(i, {"ffn.gate.tid2eid", "mlp.gate.tid2eid"}),
                                          {c.vocab_size, c.num_experts_per_tok}, /*integer=*/true);
      m.tid2eid.resize(t.size());
      for (size_t k = 0; k < t.size(); ++k) {
        if (!(t[k] >= 0 && t[k] < float(E))) {
          char id[48];
          std::snprintf(id, sizeof id, "%.0f", static_cast<double>(t[k]));
          throw std::invalid_argument("layer " + std::to_string(i) + " tid2eid holds expert id " + id + " at [" +
                                      std::to_string(k / size_t(c.num_experts_per_tok)) + ", " +
                                      std::to_string(k % size_t(c.num_experts_per_tok)) + "] (token, slot), outside [0, " +
                                      std::to_string(E) + ") (fp4moe doctor lists every finding)");
        }
        m.tid2eid[k] = static_cast<int32_t>(t[k]);
      }
    }
    const auto stacked_gu = L(i, {"mlp.experts.gate_up_proj", "ffn.experts.gate_up_proj"});
    if (!ld.any(L(i, {"ffn.experts.0.w1.weight", "mlp.experts.0.gate_proj.weight"})) && ld.any(stacked_gu)) {
      // transformers' in-memory layout: experts stacked in 3-D BF16 tensors, gate_up = [E, 2I, H]
      // (rows [0, I) gate, [I, 2I) up) and down = [E, H, I]; each expert becomes its own matrix.
      const std::vector<float> gu = ld.vec(stacked_gu, {E, 2 * I, H});
      const std::vector<float> dn = ld.vec(L(i, {"mlp.experts.down_proj", "ffn.experts.down_proj"}), {E, H, I});
      for (int64_t e = 0; e < E; ++e) {
        m.gate_up.push_back(GateUp{make_bf16_matrix(&gu[static_cast<size_t>(e * 2 * I * H)], 2 * I, H), {}, {}, false});
        m.down.push_back(make_bf16_matrix(&dn[static_cast<size_t>(e * H * I)], H, I));
      }
    }
    for (int64_t e = 0; e < E && m.down.size() < size_t(E); ++e) {
      // One tensor per expert: the saved names (ffn.experts.E.w1/w3/w2) or transformers' own
      // (mlp.experts.E.gate/up/down_proj, as quantize writes them for a stacked checkpoint).
      const std::string p = "ffn.experts." + std::to_string(e) + ".", q = "mlp.experts." + std::to_string(e) + ".";
      auto names = [&](const char* saved, const char* hf) {
        const std::string a = p + saved, b = q + hf;
        return L(i, {a.c_str(), b.c_str()});
      };
      const Matrix g = ld.mat(names("w1.weight", "gate_proj.weight"), I, H);
      const Matrix u = ld.mat(names("w3.weight", "up_proj.weight"), I, H);
      m.gate_up.push_back(join_gate_up(g, u));
      m.down.push_back(ld.mat(names("w2.weight", "down_proj.weight"), H, I));
    }
    const Matrix sg = ld.mat(L(i, {"ffn.shared_experts.w1.weight", "mlp.shared_experts.gate_proj.weight"}), I, H);
    const Matrix su = ld.mat(L(i, {"ffn.shared_experts.w3.weight", "mlp.shared_experts.up_proj.weight"}), I, H);
    m.shared_gate_up = join_gate_up(sg, su);
    m.shared_down = ld.mat(L(i, {"ffn.shared_experts.w2.weight", "mlp.shared_experts.down_proj.weight"}), H, I);
  }
  return w;
}

}  // namespace fp4moe::model
