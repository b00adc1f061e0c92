// `fp4moe doctor`: every check that stands between a checkpoint and a silent wrong answer.
// Each finding names the tensor, its file and what is wrong.
//
//   global-scale      weight_scale_2 / weight_global_scale not an F32 scalar as `run` reads it
//                     (io::scalar_f32: shape [] or [1]); NaN, Inf, zero, negative, denormal,
//                     with a reciprocal that is not a finite normal number, or so large that
//                     the largest weights (6 x 448 x scale) overflow fp32
//   block-scale-*     e4m3 block scales: NaN codes (S.1111.111), negative, zero; denormal ones
//                     are a warning (fewer mantissa bits); ue8m0 NaN codes (0xFF); FP8-block ue8m0
//                     0x00 (2^-127, a dead block: block-scale-zero, as an e4m3 zero); fp32 FP8-block
//                     scales that are NaN, Inf, zero, negative or denormal; MXFP4 ue8m0 scales
//                     outside 2^-63..2^63 are a warning (block-scale-range: the CUDA kernels
//                     refuse such a block unless its codes are all zero)
//   weight-overflow   an FP4 / FP8-block weight whose code x block scale x global scale overflows
//                     fp32 (`run` refuses it at load): read where a block scale allows it
//                     (ue8m0 2^126 and up, fp32 FP8-block scales above FLT_MAX / 448), and for
//                     every quantized weight with scan_fp8_weights
//   weight-nan        e4m3 NaN codes in FP8 weights (with scan_fp8_weights: it reads them all)
//   weight-nonfinite  NaN or Inf in plain 1-D / 2-D tensors (norms, biases, hc_*, ape, sinks;
//                     BF16, F32, F8_E4M3), always, and in unquantized BF16 / F32 linear weights
//                     (embeddings, the head, routers) and 3-D stacked experts with scan_fp8_weights
//   input-scale       not one F32 value (any shape of one element: `run` does not read it);
//                     NaN/Inf/zero/negative/denormal, 1/input_scale overflowing fp32 (error), or so
//                     small that activations of a typical magnitude saturate (warning)
//   fused-global-scale  gate/up (w1/w3) and q_a/kv (wq_a/wkv) parts with different global scales
//                     (warning: fp4moe keeps one per part; the message gives the error a runtime
//                     sharing one scale would make)
//   missing-tensor / extra-tensor / shape-mismatch   against config.json (DeepSeek-V4, -V3,
//                     Qwen3-MoE) and
//                     between a weight and its companions
//   scheme-mismatch   a layer stored in another format than the quantization config says
//   tid2eid-range     DeepSeek-V4 hash-routing tables holding expert ids outside [0, experts), or
//                     stored in another dtype than I64 / I32
//   dtype             a tensor in a dtype `run` refuses at load: an unquantized linear weight not
//                     BF16 / F32 (F16), a plain tensor (norm, bias, sink, hc_*, ape...) not BF16,
//                     F32 or F8_E4M3 (F16, I16, or integers read as float parameters); MTP tensors,
//                     which run never reads, aside. (scan_layout also reports companions of the
//                     wrong dtype under this name.)
//   unreadable-tensor a tensor one of the checks above could not read (its message says why);
//                     the other tensors are still checked
//   stray-file        a .safetensors file beside model.safetensors.index.json that the index
//                     does not name (warning: no command reads it)
// Errors make `doctor` exit 1; warnings are reported and, with --strict, count as errors.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/config.h"
#include "io/quant_scheme.h"
#include "io/safetensors.h"

namespace fp4moe::weights {

enum class Severity : uint8_t { kError, kWarning };
const char* to_string(Severity s);

struct Finding {
  Severity severity = Severity::kError;
  std::string check;
  std::string tensor;
  std::string file;
  std::string message;
};

struct DoctorOptions {
  // Activations whose block amax reaches this saturate the e4m3 activation scale when
  // 2688 * input_scale is below it; post-norm LLM activations routinely reach 1.
  float typical_activation_amax = 1.0f;
  // Also read every FP8 weight byte for e4m3 NaN codes (reads the whole FP8 part of the checkpoint).
  bool scan_fp8_weights = false;
};

struct DoctorReport {
  std::vector<Finding> findings;
  int64_t linears = 0;
  int64_t block_scales_checked = 0;
  int64_t global_scales_checked = 0;
  int64_t errors() const;
  int64_t warnings() const;
};

// Progress: called with the bytes of scales read so far and the total.
using DoctorProgress = std::function<void(uint64_t, uint64_t)>;

// config may be null (no config.json): the config checks are skipped and a warning says so.
DoctorReport run_doctor(const io::Checkpoint& ckpt, const io::ModelConfig* config, const io::QuantScheme& scheme,
                        const DoctorOptions& opt = {}, const DoctorProgress& progress = {});

// What a checkpoint of each architecture holds for its config, in canonical names (weights/names.h):
// linear modules with their logical [out, in] shape, and plain tensors with their shape.
struct ExpectedTensor {
  std::string name;  // module for linears, full tensor name otherwise
  bool linear = false;
  std::vector<int64_t> shape;
};
std::vector<ExpectedTensor> expected_deepseek_v4(const io::DeepSeekV4Config& c, bool stacked_experts);
std::vector<ExpectedTensor> expected_deepseek_v3(const io::DeepSeekV3Config& c, bool stacked_experts);
std::vector<ExpectedTensor> expected_qwen3_moe(const io::Qwen3MoeConfig& c, bool stacked_experts);

}  // namespace fp4moe::weights
