// The DeepSeek-V4 forward pass (spec: shared/reference/deepseek_v4.md, after transformers 5.17).
//
//   ids -> embedding -> 4 equal hyper-connection streams
//       -> per layer: mHC(attention) then mHC(MoE)
//       -> hc_head collapse -> final RMSNorm -> lm_head -> logits at every position
//
// One entry point runs any number of new tokens of a sequence against its SequenceState:
// a prefill is a call on a fresh state, a decode step a call with one token. The compressors,
// the indexer and the sliding window keep what later tokens need in the state, so chunked and
// token-by-token runs give the logits of a full prefill.
//
// Numerics: activations are fp32 arrays; with ActDType::kBF16 every value is rounded to bf16
// where transformers' bf16 model rounds (spec section 11), with kF32 nowhere. Linear layers go
// through the Backend (any weight format, global scales per output range); the other ops are
// the CPU references in ops/cpu.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "formats/matrix.h"
#include "model/config.h"
#include "model/state.h"
#include "model/weights.h"
#include "ops/cpu/act_dtype.h"

namespace fp4moe::model {

// The op interface the forward calls for its linear layers: y [m, w.rows] = x [m, w.cols] . W^T
// (unrounded fp32). The CPU reference is the default; a CUDA backend implements the same.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual void linear(const float* x, int64_t m, const MatrixView& w, float* y) const = 0;
};
std::shared_ptr<const Backend> cpu_backend();

struct ModelOptions {
  cpu::ActDType dtype = cpu::ActDType::kBF16;
  std::shared_ptr<const Backend> backend;  // null: the CPU reference
};

class V4Model {
 public:
  V4Model(V4Config config, V4Weights weights, ModelOptions options = {});

  const V4Config& config() const { return cfg_; }
  const V4Weights& weights() const { return w_; }
  cpu::ActDType dtype() const { return opt_.dtype; }

  SequenceState new_state() const;

  // Runs `ids` as the next tokens of the sequence; returns logits [ids.size(), vocab].
  // Throws std::invalid_argument for a token id outside the vocabulary.
  std::vector<float> forward(SequenceState& state, std::span<const int32_t> ids) const;

  // A batch of sequences, each with its own state and new tokens (of any lengths).
  std::vector<std::vector<float>> forward_batch(std::span<SequenceState> states,
                                                std::span<const std::vector<int32_t>> ids) const;

 private:
  struct Rope {
    std::vector<float> inv_freq;
  };
  const Rope& rope_for(AttnType t) const { return t == AttnType::kSliding ? rope_main_ : rope_compress_; }

  void linear(const float* x, int64_t m, const Matrix& w, float* y) const;  // rounded to the dtype
  std::vector<float> attention(int64_t layer, const float* x, int64_t S, int64_t pos0, LayerState& st) const;
  // New entries of one compressor appended to st.entries; returns how many.
  int64_t compress(const CompressorWeights& cw, int64_t ratio, const float* x, int64_t S, CompressorState& st,
                   const Rope& rope) const;
  std::vector<float> moe(int64_t layer, const float* x, int64_t S, std::span<const int32_t> ids) const;

  V4Config cfg_;
  V4Weights w_;
  ModelOptions opt_;
  Rope rope_main_, rope_compress_;
};

}  // namespace fp4moe::model
