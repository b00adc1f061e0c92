// Whole-tensor quantizers and layout transforms over the block rules of blocks.h:
//   - NVFP4 weights, byte-exact with NVIDIA ModelOpt (weight, weight_scale, weight_scale_2)
//   - NVFP4 activations with a static (1/input_scale) or dynamic (from amax) global scale
//   - MXFP4 and FP8 128x128 block quantization (fp32 or ue8m0 block scales)
//   - BF16 matrices, fused projections (row concatenation keeping one global scale per part)
//   - the Blackwell 128x4 scale swizzle and its inverse
//   - the compressed-tensors reciprocal global-scale convention
// Inputs are fp32 arrays (bf16 checkpoints convert exactly). Shapes that do not divide into
// blocks throw std::invalid_argument with the shape in the message.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "formats/matrix.h"

namespace fp4moe {

// ---- NVFP4 weights ---------------------------------------------------------------------
// How weight_scale_2 = amax / 2688 is rounded. PyTorch divides a CUDA tensor by a Python
// float as a multiplication by the fp32 reciprocal, and exactly on the CPU; ModelOpt exports
// on the GPU, so kCudaReciprocal reproduces real checkpoints. The two differ in the last bit
// for some amax values.
enum class GlobalScaleRounding : uint8_t { kCudaReciprocal, kIeeeDivision };

struct Nvfp4WeightOptions {
  GlobalScaleRounding rounding = GlobalScaleRounding::kCudaReciprocal;
};

// weight_scale_2 for a tensor with this amax. An all-zero tensor gets 1.0 (ModelOpt would
// produce 0 and then NaN block scales; we refuse to emit NaN).
float nvfp4_weight_global_scale(float amax, Nvfp4WeightOptions opt = {});

// Quantizes a [rows, cols] weight; cols % 16 == 0. One output range.
Matrix quantize_nvfp4_weight(const float* w, int64_t rows, int64_t cols, Nvfp4WeightOptions opt = {});

// ---- NVFP4 activations ----------------------------------------------------------------------
enum class ScaleLayout : uint8_t { kRowMajor, kSwizzled128x4 };

// gs multiplies activations before block quantization; dequant_scale undoes it (the factor
// that joins weight_scale_2 in the GEMM epilogue).
struct ActGlobalScale {
  float gs = 1.0f;
  float dequant_scale = 1.0f;
};
// Static: gs = 1 / input_scale (IEEE), dequant_scale = input_scale. Throws on a zero,
// negative, denormal or non-finite input_scale, or one whose reciprocal overflows.
ActGlobalScale act_global_scale_static(float input_scale);
// Dynamic: gs = 2688 / amax over the finite values of x, dequant_scale = 1 / gs.
ActGlobalScale act_global_scale_dynamic(const float* x, int64_t count);

struct Nvfp4Activations {
  int64_t rows = 0, cols = 0;
  ScaleLayout layout = ScaleLayout::kRowMajor;
  std::vector<uint8_t> packed;  // [rows, cols/2]
  std::vector<uint8_t> scales;  // e4m3 [rows, cols/16], or swizzled and padded
  ActGlobalScale global;
};
Nvfp4Activations quantize_nvfp4_activations(const float* x, int64_t rows, int64_t cols, ActGlobalScale g,
                                            ScaleLayout layout = ScaleLayout::kRowMajor);
// Dequantized activations: code * scale * dequant_scale, fp32 [rows, cols].
std::vector<float> dequantize_nvfp4_activations(const Nvfp4Activations& a);

// ---- MXFP4, FP8 block, BF16 ------------------------------------------------------------
Matrix quantize_mxfp4(const float* w, int64_t rows, int64_t cols);                // cols % 32 == 0
Matrix quantize_fp8_block(const float* w, int64_t rows, int64_t cols, ScaleKind scale_kind);  // kF32 | kUe8m0
Matrix make_bf16_matrix(const float* w, int64_t rows, int64_t cols);              // rounds to bf16

// Fused projection: parts stacked along rows, same format, scale kind and cols. Each part's
// ranges are kept (shifted), so every part keeps its own global scale. FP8-block parts must
// have a multiple of 128 rows (scale blocks cannot straddle parts).
Matrix concat_rows(std::span<const Matrix* const> parts);

// ---- 128x4 scale swizzle -------------------------------------------------------------------
int64_t swizzled_128x4_bytes(int64_t rows, int64_t scale_cols);
// Row-major [rows, scale_cols] -> swizzled (padding bytes are zero).
std::vector<uint8_t> swizzle_scales_128x4(const uint8_t* scales, int64_t rows, int64_t scale_cols);
// Swizzled -> row-major [rows, scale_cols] (padding dropped).
std::vector<uint8_t> unswizzle_scales_128x4(const uint8_t* swizzled, int64_t rows, int64_t scale_cols);

// ---- compressed-tensors convention ---------------------------------------------------------
// llm-compressor stores weight_global_scale = 2688 / amax, the reciprocal of ModelOpt's
// weight_scale_2 (and input_global_scale likewise). Converting costs one IEEE division and
// may move the last bit of the global scale; both directions throw on zero, negative or
// non-finite inputs, or a result that is not a finite normal number.
float ct_global_scale_to_modelopt(float ct_global_scale);
float modelopt_global_scale_to_ct(float weight_scale_2);

}  // namespace fp4moe
