// DeepSeek-V4 weights as the forward uses them, loaded from a WeightSource by name.
//
// Names: a checkpoint written by transformers' save_pretrained (and make-tiny) uses DeepSeek's
// names under "model." (model.layers.N.attn.wq_a.weight, ...); transformers' in-memory names
// (model.layers.N.self_attn.q_a_proj.weight, ...) and the native names without "model." are
// accepted too (spec section 2). A missing tensor is an error naming the first candidate and
// the others tried. Shapes are checked against the config with the name in the message.
//
// Linear weights stay in their stored format (Matrix); routed and shared experts' gate (w1)
// and up (w3) are joined into one [2I, H] matrix whose two parts keep their own global scales.
// Routed experts are read one tensor per expert (ffn.experts.E.w1/w2/w3), or from transformers'
// stacked 3-D tensors (mlp.experts.gate_up_proj [E, 2I, H], down_proj [E, H, I]; BF16 values).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "formats/matrix.h"
#include "model/config.h"
#include "model/weight_source.h"

namespace fp4moe::model {

struct HcWeights {
  std::vector<float> fn;     // [rows, hc_mult * hidden]
  std::vector<float> base;   // [rows]
  std::vector<float> scale;  // [3] (blocks) or [1] (head)
};

// A compressor (CSA/HCA main branch or the CSA indexer's): width = entry dim, parts = 2 for
// the overlapping CSA windows (projections are parts*width wide), 1 for HCA.
struct CompressorWeights {
  int64_t width = 0;
  int64_t parts = 1;
  Matrix wkv, wgate;        // [parts*width, hidden]
  std::vector<float> ape;   // position_bias [ratio, parts*width]
  std::vector<float> norm;  // kv_norm [width]
};

struct AttentionWeights {
  Matrix wq_a, wq_b, wkv, wo_b;
  std::vector<Matrix> wo_a;  // one [o_lora_rank, heads*head_dim/o_groups] slice per group
  std::vector<float> q_norm, kv_norm, sinks;
  std::optional<CompressorWeights> compressor;  // CSA and HCA
  std::optional<CompressorWeights> indexer;     // CSA only: index keys
  Matrix index_wq_b, index_weights_proj;        // CSA only
};

// An expert's gate (w1) and up (w3): one fused [2I, hidden] matrix whose two parts keep their
// own global scales, or the two apart when the format cannot stack them (FP8 blocks of 128 rows
// that would straddle the parts).
struct GateUp {
  Matrix fused;
  Matrix gate, up;
  bool split = false;
};
GateUp join_gate_up(Matrix gate, Matrix up);

struct MoeWeights {
  Matrix gate;                   // router [E, hidden]
  std::vector<float> bias;       // e_score_correction_bias [E] (scored layers)
  std::vector<int32_t> tid2eid;  // [vocab, top_k] (hash layers)
  std::vector<GateUp> gate_up;   // per expert [2I, hidden]
  std::vector<Matrix> down;      // per expert [hidden, I]
  GateUp shared_gate_up;
  Matrix shared_down;
};

struct LayerWeights {
  HcWeights hc_attn, hc_ffn;
  std::vector<float> attn_norm, ffn_norm;
  AttentionWeights attn;
  MoeWeights moe;
};

struct V4Weights {
  Matrix embed;  // [vocab, hidden]
  HcWeights hc_head;
  std::vector<float> norm;
  Matrix head;   // [vocab, hidden]
  std::vector<LayerWeights> layers;
};

V4Weights load_v4_weights(const V4Config& c, const WeightSource& src);

// Rows [begin, begin + count) of a matrix, keeping each row's global scale: BF16, NVFP4 and
// MXFP4 any rows; FP8 block when the slice starts on a 128-row boundary or lies inside one
// 128-row block (its rows then share that block's scales).
Matrix matrix_row_slice(const Matrix& m, int64_t begin, int64_t count);

}  // namespace fp4moe::model
