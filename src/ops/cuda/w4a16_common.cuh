// Device helpers shared by the W4A16 kernels (linear and grouped MoE): e2m1 -> bf16
// dequantization of the repacked layout (w4a16_layout.h explains the bit tricks), scale
// preprocessing, the mma wrapper, cp.async and ldmatrix staging of the activations, and the
// per-row epilogue scale.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "ops/cuda/w4a16_layout.h"

namespace fp4moe::cuda::detail {

// bf16 pair (S', S') for the byte at index idx (0..3) of w: S' = scale * 2^64.
template <bool NV>
__device__ __forceinline__ uint32_t scale_pair(uint32_t w, int idx) {
  const uint32_t p = __byte_perm(w, 0u, static_cast<uint32_t>(idx | (4 << 4) | (idx << 8) | (4 << 12)));
  if constexpr (NV) return p * 16u + 0x5A805A80u;  // e5m3: exponent E+181, 3 mantissa bits
  else return p * 128u + 0x20002000u;               // ue8m0: exponent code+64
}

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  __nv_bfloat162 r = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&a), *reinterpret_cast<__nv_bfloat162*>(&b));
  return *reinterpret_cast<uint32_t*>(&r);
}

// The A fragment of k16 step j from a tile's 16 code bytes and its quad's scale bytes.
// NV: sc = 8 bytes [j][g, g+8]; MX: sc.x = 4 bytes [block][g, g+8].
template <bool NV>
__device__ __forceinline__ void a_fragment(const uint4& codes, const uint2& sc, int j, uint32_t (&a)[4]) {
  const uint32_t q = j == 0 ? codes.x : j == 1 ? codes.y : j == 2 ? codes.z : codes.w;
  uint32_t sg, sg8;
  if constexpr (NV) {
    const uint32_t w = j < 2 ? sc.x : sc.y;
    sg = scale_pair<true>(w, 2 * (j & 1));
    sg8 = scale_pair<true>(w, 2 * (j & 1) + 1);
  } else {
    sg = scale_pair<false>(sc.x, 2 * (j >> 1));
    sg8 = scale_pair<false>(sc.x, 2 * (j >> 1) + 1);
  }
  uint32_t r[4];
  w4_dequant_word(q, r);  // four bf16 pairs, value code * 2^-126 (w4a16_layout.h)
  a[0] = bf16x2_mul(r[0], sg);   // row g,   k 2q..2q+1
  a[1] = bf16x2_mul(r[1], sg8);  // row g+8, k 2q..2q+1
  a[2] = bf16x2_mul(r[2], sg);   // row g,   k 2q+8..
  a[3] = bf16x2_mul(r[3], sg8);  // row g+8, k 2q+8..
}

// The scale bytes' shift, as a multiplier the compiler cannot see: with a literal 16 or 128,
// ptxas turns (p * m + c) into a shift-add (LEA) on the integer ALU, the busiest pipe of the
// decode kernels; with a register it stays one IMAD on the FMA pipe.
static __constant__ uint32_t kScaleShift[2] = {16u, 128u};  // NVFP4 (e5m3 << 4), MXFP4 (ue8m0 << 7)

// bf16 scale pairs of one tile for one quad, prepared once per tile: NV: sw[0] =
// (S'(j0,g), S'(j1,g)), sw[1] the rows g+8, sw[2], sw[3] the same for j2, j3; MX: sw[0] =
// (S'(blk0,g), S'(blk1,g)), sw[1] the rows g+8. Each half equals scale_pair's for that byte:
// one byte permute and one multiply-add per two scales (scale_pair: per scale).
template <bool NV>
__device__ __forceinline__ void tile_scales(const uint2& s, uint32_t (&sw)[4]) {
  if constexpr (NV) {
    const uint32_t m = kScaleShift[0];
    sw[0] = __byte_perm(s.x, 0u, 0x4240) * m + 0x5A805A80u;
    sw[1] = __byte_perm(s.x, 0u, 0x4341) * m + 0x5A805A80u;
    sw[2] = __byte_perm(s.y, 0u, 0x4240) * m + 0x5A805A80u;
    sw[3] = __byte_perm(s.y, 0u, 0x4341) * m + 0x5A805A80u;
  } else {
    const uint32_t m = kScaleShift[1];
    sw[0] = __byte_perm(s.x, 0u, 0x4240) * m + 0x20002000u;
    sw[1] = __byte_perm(s.x, 0u, 0x4341) * m + 0x20002000u;
    sw[2] = sw[3] = 0u;
  }
}

// a times the bf16 half H of s, broadcast to both halves (one HMUL2 with a half selector).
template <int H>
__device__ __forceinline__ uint32_t mul_half(uint32_t a, uint32_t s) {
  const __nv_bfloat162 A = *reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162 S = *reinterpret_cast<const __nv_bfloat162*>(&s);
  const __nv_bfloat162 r = __hmul2(A, H ? __high2bfloat162(S) : __low2bfloat162(S));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// The A fragment of k16 step J: a_fragment's values (the same bits), the scale pairs
// prepared once per tile by tile_scales.
template <bool NV, int J>
__device__ __forceinline__ void a_fragment_fast(const uint4& codes, const uint32_t (&sw)[4], uint32_t (&a)[4]) {
  const uint32_t q = J == 0 ? codes.x : J == 1 ? codes.y : J == 2 ? codes.z : codes.w;
  uint32_t r[4];
  w4_dequant_word(q, r);
  constexpr int kW = NV ? (J >> 1) * 2 : 0;    // scale word of this step
  constexpr int kH = NV ? (J & 1) : (J >> 1);  // its half
  a[0] = mul_half<kH>(r[0], sw[kW]);      // row g,   k 2q..2q+1
  a[1] = mul_half<kH>(r[1], sw[kW + 1]);  // row g+8
  a[2] = mul_half<kH>(r[2], sw[kW]);      // row g,   k 2q+8..
  a[3] = mul_half<kH>(r[3], sw[kW + 1]);  // row g+8
}

// D += A . B, m16n8k16, bf16 inputs, fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// cp.async of 16 bytes into shared memory; valid == false fills the 16 bytes with zeros
// (rows past the end of the activations read nothing).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// B fragments (the activations) of token tiles t, t+1 (or t alone when MT == 1) for the k16
// step at column kc, by ldmatrix from shared memory rows of kPitch bf16 (padded by 16 bytes so
// the eight row addresses of an 8x8 matrix fall in distinct banks).
template <int MT, int kPitch>
__device__ __forceinline__ void b_fragments(const __nv_bfloat16* xs, int kc, int lane, uint32_t (&b)[MT][2]) {
#pragma unroll
  for (int t = 0; t < MT; t += 2) {
    const int sub = MT == 1 ? 0 : lane / 16;
    const int row = (t + sub) * 8 + lane % 8;
    const int col = kc + ((lane / 8) % 2) * 8;
    const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(xs + row * kPitch + col));
    if constexpr (MT == 1) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(b[0][0]), "=r"(b[0][1]) : "r"(addr));
    } else {
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(b[t][0]), "=r"(b[t][1]), "=r"(b[t + 1][0]), "=r"(b[t + 1][1])
                   : "r"(addr));
    }
  }
}

// Epilogue factor of output row n: alpha * g(n) * 2^62 (ranges sorted, first at row 0).
struct RangeScales {
  const int32_t* begin;  // device, num entries
  const float* scale;    // device, num entries
  int num;
  const float* alpha;    // device scalar or null (W4A4: the activations' dequant scale)
};
__device__ __forceinline__ float row_factor(const RangeScales& rs, int64_t n) {
  float g = rs.scale[0];
  for (int i = 1; i < rs.num; ++i)
    if (rs.begin[i] <= n) g = rs.scale[i];
  const float a = rs.alpha ? *rs.alpha : 1.0f;
  return a * g * kEpilogueUnscale;
}

__device__ __forceinline__ void store_out(void* y, bool f32, int64_t idx, float v) {
  if (f32) static_cast<float*>(y)[idx] = v;
  else static_cast<__nv_bfloat16*>(y)[idx] = __float2bfloat16_rn(v);
}

}  // namespace fp4moe::cuda::detail
