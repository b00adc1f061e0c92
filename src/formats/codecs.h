// Scalar number formats: e2m1 (FP4), e4m3 (FP8 "float8_e4m3fn"), ue8m0 (power-of-two
// scales) and bf16. This is the only place their bit layouts are written down; every other
// file (host or device) converts through these functions.
//
// Rounding is round-to-nearest, ties to even, everywhere. The conversions are exact integer
// manipulations of the fp32 bit pattern, so the CPU and the GPU produce the same codes for
// the same inputs. Special values, as documented in README-level terms:
//   e2m1 encode: |x| > 5 (and +-Inf) saturates to +-6; NaN encodes to +0 (e2m1 has no NaN;
//                block quantizers route NaN to the block scale instead, see blocks.h).
//                The sign is taken from (x < 0), so -0.0 encodes as +0 and a small negative
//                value that rounds to zero keeps its sign (code 0x8), as ModelOpt does.
//   e4m3 encode: saturating: |x| >= 448 (and +-Inf) gives +-448; NaN gives 0x7F/0xFF.
//   e4m3 decode: 0x7F and 0xFF are NaN; everything else is finite.
//   ue8m0:       value 2^(code-127); 0xFF is NaN; code 0 is 2^-127 (an fp32 subnormal).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FP4_HD __host__ __device__ __forceinline__
#else
#define FP4_HD inline
#endif

namespace fp4moe {

static_assert(sizeof(float) == 4 && sizeof(uint32_t) == 4, "fp32 codecs manipulate the 32-bit IEEE pattern");
static_assert(sizeof(uint16_t) == 2 && sizeof(uint8_t) == 1, "bf16 is 2 bytes; e4m3, ue8m0 and two e2m1 codes are 1 byte");

// ---- fp32 bit access, usable on host and device --------------------------------------
FP4_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
FP4_HD float f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
FP4_HD bool f32_is_nan(float f) { return (f32_bits(f) & 0x7FFFFFFFu) > 0x7F800000u; }
FP4_HD bool f32_is_finite(float f) { return (f32_bits(f) & 0x7F800000u) != 0x7F800000u; }
FP4_HD float f32_abs(float f) { return f32_from_bits(f32_bits(f) & 0x7FFFFFFFu); }
FP4_HD float f32_quiet_nan() { return f32_from_bits(0x7FC00000u); }

// ---- e2m1 ------------------------------------------------------------------------------
// Magnitudes by code 0..7. Code bit 3 is the sign.
inline constexpr float kE2m1Max = 6.0f;

FP4_HD float e2m1_to_float(uint8_t code) {
  // Table in registers/constant folding; 8 magnitudes, sign in bit 3.
  const uint32_t c = code & 0x7u;
  // 0, 0.5, 1, 1.5, 2, 3, 4, 6 == (c<2 ? c*0.5 : (2 + (c&1)) * 2^((c>>1)-2))
  float mag = (c < 2u) ? 0.5f * static_cast<float>(c)
                       : static_cast<float>(2u + (c & 1u)) * f32_from_bits((125u + (c >> 1)) << 23);
  return (code & 0x8u) ? -mag : mag;
}

// Round to nearest, ties to even code, saturating at 6. The decision thresholds are the
// midpoints 0.25 0.75 1.25 1.75 2.5 3.5 5; at a midpoint the even code wins
// (0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4).
FP4_HD uint8_t e2m1_from_float(float x) {
  if (f32_is_nan(x)) return 0;
  const uint8_t sign = (x < 0.0f) ? 0x8u : 0x0u;
  const float a = f32_abs(x);
  uint8_t c;
  if (a <= 0.25f) c = 0;
  else if (a < 0.75f) c = 1;
  else if (a <= 1.25f) c = 2;
  else if (a < 1.75f) c = 3;
  else if (a <= 2.5f) c = 4;
  else if (a < 3.5f) c = 5;
  else if (a <= 5.0f) c = 6;
  else c = 7;
  return sign | c;
}

// Two codes per byte: element 2j in the low nibble, 2j+1 in the high nibble.
FP4_HD uint8_t e2m1_pack(uint8_t even, uint8_t odd) {
  return static_cast<uint8_t>((even & 0xFu) | ((odd & 0xFu) << 4));
}
FP4_HD uint8_t e2m1_unpack_lo(uint8_t byte) { return byte & 0xFu; }
FP4_HD uint8_t e2m1_unpack_hi(uint8_t byte) { return byte >> 4; }

// ---- e4m3 (float8_e4m3fn) ------------------------------------------------------------
inline constexpr float kE4m3Max = 448.0f;
inline constexpr uint8_t kE4m3NaN = 0x7F;

FP4_HD bool e4m3_is_nan(uint8_t code) { return (code & 0x7Fu) == 0x7Fu; }

FP4_HD float e4m3_to_float(uint8_t code) {
  const uint32_t sign = static_cast<uint32_t>(code & 0x80u) << 24;
  const uint32_t e = (code >> 3) & 0xFu;
  const uint32_t m = code & 0x7u;
  if (e == 0xFu && m == 0x7u) return f32_from_bits(sign | 0x7FC00000u);
  if (e == 0) {
    // Subnormal: m * 2^-9, exact in fp32.
    const float v = static_cast<float>(m) * f32_from_bits((127u - 9u) << 23);
    return f32_from_bits(sign | f32_bits(v));
  }
  return f32_from_bits(sign | ((e - 7u + 127u) << 23) | (m << 20));
}

// Saturating, round-to-nearest-even conversion (what CUDA's __nv_fp8_e4m3(float) does).
FP4_HD uint8_t e4m3_from_float_sat(float x) {
  const uint32_t bits = f32_bits(x);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  if (f32_is_nan(x)) return sign | kE4m3NaN;
  const uint32_t ab = bits & 0x7FFFFFFFu;
  if (ab >= 0x43E00000u) return sign | 0x7Eu;  // |x| >= 448 (incl. Inf)
  if (ab < 0x3C800000u) {                       // |x| < 2^-6: subnormal grid of 2^-9
    // a * 512 < 8 is exact; round it to the nearest even integer by the fp32 magic-number
    // trick (adding 2^23 pushes the fraction out under round-to-nearest-even).
    const float t = f32_from_bits(ab) * 512.0f;
    const float r = (t + 8388608.0f) - 8388608.0f;
    return sign | static_cast<uint8_t>(r);  // r == 8 becomes 0x08, the smallest normal: correct
  }
  // Normal: keep 3 mantissa bits, round half to even on bit 20.
  const uint32_t rounded = ab + 0x7FFFFu + ((ab >> 20) & 1u);
  const uint32_t e = (rounded >> 23) - 127u + 7u;  // 1..15
  const uint32_t m = (rounded >> 20) & 0x7u;
  if (e > 15u || (e == 15u && m == 7u)) return sign | 0x7Eu;  // unreachable below 448; kept as a guard
  return sign | static_cast<uint8_t>((e << 3) | m);
}

// ---- ue8m0 -----------------------------------------------------------------------------
inline constexpr uint8_t kUe8m0NaN = 0xFF;

FP4_HD float ue8m0_to_float(uint8_t code) {
  if (code == 0xFFu) return f32_quiet_nan();
  if (code == 0) return f32_from_bits(0x00400000u);  // 2^-127
  return f32_from_bits(static_cast<uint32_t>(code) << 23);
}

// Smallest power of two >= v, as a ue8m0 code, clamped to [2^-127, 2^127]. v must be a
// finite non-negative number; v == 0 gives the smallest code. Exact (no log2 rounding).
FP4_HD uint8_t ue8m0_ceil_from_float(float v) {
  const uint32_t b = f32_bits(v) & 0x7FFFFFFFu;
  if (b == 0) return 0;
  if (b >= 0x7F000000u) return 254;  // >= 2^127 (or non-finite): clamp
  uint32_t e = b >> 23;              // biased exponent, 0 for subnormals
  const uint32_t mant = b & 0x7FFFFFu;
  if (e == 0) {
    // Subnormal v <= 2^-127 except for the two largest mantissa powers: 2^-127 covers up to
    // 0x400000 (exactly 2^-127); anything above needs 2^-126 (code 1).
    return mant <= 0x400000u ? 0 : 1;
  }
  if (mant != 0) e += 1;  // not a power of two: round up
  return static_cast<uint8_t>(e > 254u ? 254u : e);
}

// ---- bf16 ------------------------------------------------------------------------------
FP4_HD float bf16_to_float(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

FP4_HD uint16_t bf16_from_float(float f) {
  const uint32_t u = f32_bits(f);
  if (f32_is_nan(f)) return static_cast<uint16_t>((u >> 16) | 0x40u);  // keep it quiet
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

FP4_HD float round_to_bf16(float f) { return bf16_to_float(bf16_from_float(f)); }

}  // namespace fp4moe
