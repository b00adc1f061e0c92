// W4A16 prefill kernel (many tokens): y[m][n] = alpha * g(n) * sum_k x[m][k] * w~[n][k].
//
// Compute-bound. CTA tile: 128 weight rows x 128 tokens, k in steps of 64, 8 warps laid
// out 4 (rows) x 2 (tokens); each warp owns 2 strips x 8 token tiles = 64 fp32
// accumulators per lane and issues 64 mma.sync m16n8k16 per k-tile.
//   - Activations (128 x 64 bf16) and the CTA's 8 weight tiles (8 x 512 code bytes + their
//     scales) arrive through a 4-stage cp.async pipeline; activation rows are padded by 16
//     bytes so ldmatrix reads them without bank conflicts.
//   - Each warp turns its strips' codes into bf16 A fragments in registers (w4a16_common.cuh:
//     4 integer ops and one bf16 multiply per pair, exact) and reads B with ldmatrix.x4.
//   - CTAs are rastered in groups of 16 row tiles so that the weights and activations of
//     the CTAs in flight stay in L2.
// What it is not (yet): wgmma. RESULTS.md gives the measured gap to cuBLAS and the plan.
#include <cuda_bf16.h>

#include "ops/cuda/w4a16_common.cuh"
#include "ops/cuda/w4a16_kernels.h"

namespace fp4moe::cuda {
namespace {

using detail::a_fragment;
using detail::cp_async16;
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::mma_bf16;

constexpr int kThreads = 256;
constexpr int kStages = 4;
constexpr int kBM = kPrefillTileTokens;  // tokens per CTA
constexpr int kBN = kPrefillTileRows;    // weight rows per CTA
constexpr int kStrips = kBN / kTileRows; // 8
constexpr int kXPitch = kTileK + 8;      // bf16 per smem row
constexpr int kXStageBytes = kBM * kXPitch * 2;
constexpr int kWStageBytes = kStrips * kTileCodeBytes;
constexpr int kSStageBytes = kStrips * kNvScaleBytesPerTile;  // room for either format
constexpr int kStageBytes = kXStageBytes + kWStageBytes + kSStageBytes;
constexpr int kSmemBytes = kStages * kStageBytes;
constexpr int kRasterGroup = 16;
static_assert(kXStageBytes % 16 == 0 && kWStageBytes % 16 == 0, "16-byte cp.async destinations");


__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

template <bool NV>
__global__ void __launch_bounds__(kThreads, 2) w4a16_prefill_kernel(const W4Args a) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wn = warp % 4, wm = warp / 4;
  const int g = lane / 4, q = lane % 4;

  // Grouped raster: blockIdx.x walks token tiles inside a group of row tiles.
  const int64_t row_tiles = (a.n + kBN - 1) / kBN, tok_tiles = (a.m + kBM - 1) / kBM;
  const int64_t bid = blockIdx.x;
  const int64_t per_group = kRasterGroup * tok_tiles;
  const int64_t grp = bid / per_group, first_row_tile = grp * kRasterGroup;
  const int64_t gsize = row_tiles - first_row_tile < kRasterGroup ? row_tiles - first_row_tile : kRasterGroup;
  const int64_t in_grp = bid % per_group;
  const int64_t row_tile = first_row_tile + in_grp % gsize;
  const int64_t tok_tile = in_grp / gsize;
  const int64_t strips = (a.n + kTileRows - 1) / kTileRows;
  const int64_t strip0 = row_tile * kStrips;
  const int64_t tok0 = tok_tile * kBM;
  const int scale_tile_bytes = NV ? kNvScaleBytesPerTile : kMxScaleBytesPerTile;

  auto stage_ptr = [&](int st) { return smem + st * kStageBytes; };
  auto issue = [&](int64_t kt, int st) {
    uint8_t* base = stage_ptr(st);
    // activations: 128 rows x 8 vectors of 16 bytes
    for (int v = threadIdx.x; v < kBM * 8; v += kThreads) {
      const int r = v / 8, c = v % 8;
      const int64_t tok = tok0 + r, kk = kt * kTileK + c * 8;
      const bool ok = tok < a.m && kk < a.k;
      cp_async16(base + (r * kXPitch + c * 8) * 2, ok ? a.x + tok * a.k + kk : a.x, ok);
    }
    // weights: 8 tiles x 32 vectors, then scales
    uint8_t* wb = base + kXStageBytes;
    for (int v = threadIdx.x; v < kStrips * 32; v += kThreads) {
      const int s = v / 32, c = v % 32;
      const bool ok = strip0 + s < strips;
      const uint8_t* src = a.codes + ((strip0 + s) * a.ktiles + kt) * kTileCodeBytes + c * 16;
      cp_async16(wb + s * kTileCodeBytes + c * 16, ok ? src : a.codes, ok);
    }
    uint8_t* sb = wb + kWStageBytes;
    const int svec = scale_tile_bytes / 16;
    for (int v = threadIdx.x; v < kStrips * svec; v += kThreads) {
      const int s = v / svec, c = v % svec;
      const bool ok = strip0 + s < strips;
      const uint8_t* src = a.scales + ((strip0 + s) * a.ktiles + kt) * scale_tile_bytes + c * 16;
      cp_async16(sb + s * scale_tile_bytes + c * 16, ok ? src : a.scales, ok);
    }
  };

  float acc[2][8][4];
#pragma unroll
  for (int s = 0; s < 2; ++s)
#pragma unroll
    for (int t = 0; t < 8; ++t) acc[s][t][0] = acc[s][t][1] = acc[s][t][2] = acc[s][t][3] = 0.0f;

  const int64_t kts = a.ktiles;
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < kts) issue(st, st);
    cp_async_commit();
  }

  for (int64_t kt = 0; kt < kts; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    {
      const int64_t nk = kt + kStages - 1;
      if (nk < kts) issue(nk, static_cast<int>(nk % kStages));
      cp_async_commit();
    }
    const uint8_t* base = stage_ptr(static_cast<int>(kt % kStages));
    const __nv_bfloat16* xs = reinterpret_cast<const __nv_bfloat16*>(base);
    const uint8_t* wb = base + kXStageBytes;
    const uint8_t* sb = wb + kWStageBytes;
    uint4 codes[2];
    uint2 sc[2];
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int ls = wn * 2 + s;
      codes[s] = *reinterpret_cast<const uint4*>(wb + ls * kTileCodeBytes + lane * 16);
      if constexpr (NV) sc[s] = *reinterpret_cast<const uint2*>(sb + ls * kNvScaleBytesPerTile + g * 8);
      else sc[s] = make_uint2(*reinterpret_cast<const uint32_t*>(sb + ls * kMxScaleBytesPerTile + g * 4), 0u);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (kt * kTileK + j * 16 >= a.k) break;  // padded k16 steps
      // Both strips' A fragments stay in registers; B comes two token tiles at a time.
      uint32_t af[2][4];
#pragma unroll
      for (int s = 0; s < 2; ++s) a_fragment<NV>(codes[s], sc[s], j, af[s]);
#pragma unroll
      for (int t = 0; t < 8; t += 2) {
        const int row = wm * 64 + (t + lane / 16) * 8 + lane % 8;
        const int col = j * 16 + ((lane / 8) % 2) * 8;
        uint32_t r[4];
        ldmatrix_x4(r, xs + row * kXPitch + col);
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          mma_bf16(acc[s][t], af[s], r[0], r[1]);
          mma_bf16(acc[s][t + 1], af[s], r[2], r[3]);
        }
      }
    }
  }
  cp_async_wait<0>();

  const detail::RangeScales rs{a.range_begin, a.range_scale, a.num_ranges, a.alpha};
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    const int64_t n0 = (strip0 + wn * 2 + s) * kTileRows + g, n1 = n0 + 8;
    const float f0 = n0 < a.n ? detail::row_factor(rs, n0) : 0.0f;
    const float f1 = n1 < a.n ? detail::row_factor(rs, n1) : 0.0f;
#pragma unroll
    for (int t = 0; t < 8; ++t)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t tok = tok0 + wm * 64 + t * 8 + 2 * q + e;
        if (tok >= a.m) continue;
        if (n0 < a.n) detail::store_out(a.y, a.y_f32, tok * a.n + n0, acc[s][t][e] * f0);
        if (n1 < a.n) detail::store_out(a.y, a.y_f32, tok * a.n + n1, acc[s][t][2 + e] * f1);
      }
  }
}

template <bool NV>
cudaError_t launch_prefill(const W4Args& a, cudaStream_t s) {
  static bool attr_set = false;  // one attribute per instantiation; harmless if repeated
  if (!attr_set) {
    const cudaError_t e = cudaFuncSetAttribute(w4a16_prefill_kernel<NV>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    if (e != cudaSuccess) return e;
    attr_set = true;
  }
  const int64_t blocks = ((a.n + kBN - 1) / kBN) * ((a.m + kBM - 1) / kBM);
  w4a16_prefill_kernel<NV><<<static_cast<unsigned>(blocks), kThreads, kSmemBytes, s>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_w4a16_prefill(const W4Args& a, cudaStream_t s) {
  if (a.m == 0) return cudaSuccess;
  return a.nvfp4 ? launch_prefill<true>(a, s) : launch_prefill<false>(a, s);
}

}  // namespace fp4moe::cuda
