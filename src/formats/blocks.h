// Block formats: the per-block quantization rules of NVFP4 (16 elements, e4m3 scale, fp32
// global scale), MXFP4 (32 elements, ue8m0 scale) and FP8 128x128 blocks, and the Blackwell
// 128x4 scale swizzle. Host and device code call these same functions, so a CUDA kernel and
// the CPU reference produce identical bytes by construction; the whole-tensor drivers live
// in quantize.h.
//
// The arithmetic order is part of the format contract (it decides the last bit):
//   NVFP4 weights (ModelOpt, dynamic block path of nvfp4_tensor.py):
//     s_f  = block_amax / (6 * ws2)          fp32; 0 -> 1.0; clamped below at 2^-9
//     s    = e4m3(s_f)                       saturating
//     code = e2m1(w / (float(s) * ws2))      fp32 product, then IEEE division
//   NVFP4 activations (global scale gs = 1/input_scale, or dynamic 2688/amax):
//     s    = e4m3_sat((gs * block_amax) / 6)
//     code = e2m1((x * gs) / float(s))       a zero scale gives zero codes
//     A block holding a NaN gets the NaN scale 0x7F and zero codes: it dequantizes to NaN
//     instead of hiding the NaN. +-Inf saturates (scale 448, codes +-6).
//   MXFP4: scale = 2^ceil(log2(block_amax / 6)) (the smallest power of two that avoids
//     clipping, DeepSeek's rule); code = e2m1(x / scale) (exact division by a power of two).
//     A zero block gets scale 1.0; a NaN block gets the NaN scale 0xFF and zero codes.
#pragma once

#include <cstdint>

#include "formats/codecs.h"

namespace fp4moe {

inline constexpr int kNvfp4Block = 16;
inline constexpr int kMxfp4Block = 32;
inline constexpr int kFp8BlockRows = 128;
inline constexpr int kFp8BlockCols = 128;
inline constexpr float kNvfp4GlobalMax = 6.0f * 448.0f;  // 2688: amax that maps to (e4m3 max) x (e2m1 max)
// The MXFP4 block scales the CUDA kernels hold exactly: ue8m0 codes 64..190 (2^-63..2^63;
// ops/cuda/w4a16_layout.h derives the same bounds from its bf16 scale encoding). A block
// outside them is refused there unless all its codes are zero.
inline constexpr int kMxfp4KernelScaleMin = 64, kMxfp4KernelScaleMax = 190;

static_assert(kNvfp4Block % 2 == 0 && kMxfp4Block % 2 == 0, "FP4 blocks pack two codes per byte");
static_assert(kNvfp4Block / 2 == 8 && kMxfp4Block / 2 == 16, "an NVFP4 block is 8 code bytes + 1 e4m3 scale, MXFP4 16 + 1 ue8m0");
static_assert(kNvfp4GlobalMax == 2688.0f, "weight_scale_2 = amax / (e2m1 max * e4m3 max)");
static_assert(sizeof(uint8_t) == 1, "codes and scales are single bytes");

// Largest |x| of a block; NaN if any element is NaN (so the block scale becomes NaN and the
// NaN is not silently dropped).
FP4_HD float block_amax(const float* x, int n) {
  float m = 0.0f;
  bool nan = false;
  for (int i = 0; i < n; ++i) {
    const float a = f32_abs(x[i]);
    nan |= f32_is_nan(x[i]);
    m = a > m ? a : m;
  }
  return nan ? f32_quiet_nan() : m;
}

// ---- NVFP4 weights (ModelOpt) -----------------------------------------------------------
// Block scale of one 16-element weight block, given the tensor's weight_scale_2.
FP4_HD uint8_t nvfp4_weight_block_scale(float block_amax_v, float ws2) {
  float s = block_amax_v / (6.0f * ws2);
  if (s == 0.0f) s = 1.0f;
  if (s < 0.001953125f) s = 0.001953125f;  // 2^-9, the smallest e4m3 subnormal (NaN passes through)
  return e4m3_from_float_sat(s);
}

// Codes of one block (16 values -> 8 bytes), given its scale code and weight_scale_2.
FP4_HD void nvfp4_weight_block_codes(const float* w, uint8_t scale, float ws2, uint8_t* packed) {
  const float d = e4m3_to_float(scale) * ws2;
  for (int i = 0; i < kNvfp4Block; i += 2)
    packed[i / 2] = e2m1_pack(e2m1_from_float(w[i] / d), e2m1_from_float(w[i + 1] / d));
}

// ---- NVFP4 activations ----------------------------------------------------------------------
// Quantizes one 16-element block with global scale gs; writes 8 packed bytes, returns the
// e4m3 scale code.
FP4_HD uint8_t nvfp4_act_quantize_block(const float* x, float gs, uint8_t* packed) {
  const float amax = block_amax(x, kNvfp4Block);
  uint8_t s = e4m3_from_float_sat((gs * amax) / 6.0f);
  const float sf = e4m3_to_float(s);
  const bool zero = !(sf != 0.0f) || f32_is_nan(sf);  // zero or NaN scale: zero codes
  for (int i = 0; i < kNvfp4Block; i += 2) {
    const uint8_t lo = zero ? 0 : e2m1_from_float((x[i] * gs) / sf);
    const uint8_t hi = zero ? 0 : e2m1_from_float((x[i + 1] * gs) / sf);
    packed[i / 2] = e2m1_pack(lo, hi);
  }
  return s;
}

// Global scale from a tensor's amax for dynamic activation quantization: 2688 / amax, so the
// largest block lands on the top of the e4m3 x e2m1 range. A zero or non-finite amax gives 1.
FP4_HD float nvfp4_dynamic_global_scale(float amax) {
  if (!(amax > 0.0f) || !f32_is_finite(amax)) return 1.0f;
  const float gs = kNvfp4GlobalMax / amax;
  return f32_is_finite(gs) ? gs : 3.0e38f;  // denormal amax: keep gs finite
}

// ---- MXFP4 ---------------------------------------------------------------------------------
FP4_HD uint8_t mxfp4_block_scale(float block_amax_v) {
  if (f32_is_nan(block_amax_v)) return kUe8m0NaN;
  if (block_amax_v == 0.0f) return 127;  // 1.0: codes are all zero anyway
  return ue8m0_ceil_from_float(block_amax_v / 6.0f);
}

// Codes of one 32-element block. A NaN scale gives zero codes. Multiplying by the reciprocal
// is exact here: the reciprocal of a power of two in [2^-127, 2^127] is itself representable.
FP4_HD void mxfp4_block_codes(const float* x, uint8_t scale, uint8_t* packed) {
  const bool nan = scale == kUe8m0NaN;
  const float inv = nan            ? 0.0f
                    : scale == 254u ? f32_from_bits(0x00400000u)           // 2^-127, subnormal
                                    : f32_from_bits((254u - scale) << 23);  // 2^(127 - code)
  for (int i = 0; i < kMxfp4Block; i += 2)
    packed[i / 2] = nan ? 0 : e2m1_pack(e2m1_from_float(x[i] * inv), e2m1_from_float(x[i + 1] * inv));
}

// ---- Blackwell 128x4 swizzled scale layout ----------------------------------------------
// Rows padded to a multiple of 128, scale columns to a multiple of 4 (padding is zero).
FP4_HD int64_t swizzle_128x4_padded_rows(int64_t rows) { return (rows + 127) / 128 * 128; }
FP4_HD int64_t swizzle_128x4_padded_cols(int64_t cols) { return (cols + 3) / 4 * 4; }

// Byte offset of scale (m, k) in the swizzled buffer; padded_cols is a multiple of 4.
FP4_HD int64_t swizzle_128x4_offset(int64_t m, int64_t k, int64_t padded_cols) {
  return ((m / 128) * (padded_cols / 4) + k / 4) * 512 + (m % 32) * 16 + ((m / 32) % 4) * 4 + (k % 4);
}

}  // namespace fp4moe
