// W4A16 decode kernel (few tokens): y[m][n] = alpha * g(n) * sum_k x[m][k] * w~[n][k].
//
// Memory-bound: every weight byte is read once per call, so the kernel is shaped around
// streaming the repacked FP4 tiles at the HBM roof.
//   - A CTA is 8 warps; warp w owns one 16-row strip (rows 16*(8*blockIdx.x + w) ..) and
//     the CTA's k-range (split-K over blockIdx.y). Each lane reads its 16 code bytes of a
//     512-byte tile with one 16-byte load, evict-first (ld.global.cs: the weights are not
//     reused within the call), plus its quad's 8 (NVFP4) or 4 (MXFP4) scale bytes.
//   - Weights for the next chunk of 4 tiles are in flight while the current chunk is
//     multiplied (register double buffer), so each warp keeps ~2-4 KB outstanding.
//   - Activations of the chunk (m x 256 bf16) are staged once per CTA in shared memory and
//     shared by the 8 strips; rows are padded by 16 bytes so the 8 rows of a B fragment
//     fall in different banks.
//   - The product is mma.sync m16n8k16 with the weight as A (16 rows) and up to 64 tokens
//     as 1..8 B tiles of 8, so decode at m = 1 uses the same instruction as m = 64.
//   - Split-K partials go to an fp32 workspace; the last CTA of a column (atomic counter)
//     adds them in split order and writes y: deterministic, no float atomics, and the
//     counter is reset for the next call (CUDA-graph replay safe).
#include <cuda_bf16.h>

#include "ops/cuda/w4a16_common.cuh"
#include "ops/cuda/w4a16_kernels.h"

namespace fp4moe::cuda {
namespace {

using detail::a_fragment;
using detail::mma_bf16;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kChunkTiles = 4;                      // k-tiles per chunk (256 k)
constexpr int kChunkK = kChunkTiles * kTileK;
constexpr int kXPitch = kChunkK + 8;                // bf16 per smem row (+16 bytes)
static_assert(kWarps * kTileRows == kDecodeRowsPerCta, "config and kernel agree on rows per CTA");

struct DecodeParams {
  W4Args a;
  int splits;
  int64_t tiles_per_split;
};

template <bool NV>
__device__ __forceinline__ void load_tile(const DecodeParams& p, int64_t tile, int lane, uint4& c, uint2& s) {
  c = __ldcs(reinterpret_cast<const uint4*>(p.a.codes + tile * kTileCodeBytes) + lane);
  const int quad = lane >> 2;
  if constexpr (NV) {
    s = __ldcs(reinterpret_cast<const uint2*>(p.a.scales + tile * kNvScaleBytesPerTile) + quad);
  } else {
    s.x = __ldcs(reinterpret_cast<const uint32_t*>(p.a.scales + tile * kMxScaleBytesPerTile) + quad);
    s.y = 0;
  }
}

template <int MT, bool NV>
__global__ void __launch_bounds__(kThreads) w4a16_decode_kernel(const DecodeParams p) {
  __shared__ __align__(16) __nv_bfloat16 xs[MT * 8][kXPitch];
  __shared__ int last_flag;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q = lane % 4;
  const int64_t strips = (p.a.n + kTileRows - 1) / kTileRows;
  const int64_t strip = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const bool active = strip < strips;
  const int64_t kt0 = blockIdx.y * p.tiles_per_split;
  const int64_t kt1 = min(p.a.ktiles, kt0 + p.tiles_per_split);
  const int64_t tile_base = strip * p.a.ktiles;

  float acc[MT][4];
#pragma unroll
  for (int t = 0; t < MT; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;

  uint4 cur_c[kChunkTiles], nxt_c[kChunkTiles];
  uint2 cur_s[kChunkTiles], nxt_s[kChunkTiles];
  auto load_chunk = [&](int64_t c0, uint4 (&c)[kChunkTiles], uint2 (&s)[kChunkTiles]) {
#pragma unroll
    for (int i = 0; i < kChunkTiles; ++i) {
      if (active && c0 + i < kt1) load_tile<NV>(p, tile_base + c0 + i, lane, c[i], s[i]);
      else c[i] = make_uint4(0, 0, 0, 0), s[i] = make_uint2(0, 0);
    }
  };
  if (kt0 < kt1) load_chunk(kt0, cur_c, cur_s);

  for (int64_t c0 = kt0; c0 < kt1; c0 += kChunkTiles) {
    __syncthreads();  // the previous chunk's activations are consumed
    // Stage activations [MT*8 tokens][256 k] (zero past m and k): 16-byte vectors.
    constexpr int kVecPerRow = kChunkK / 8;
    for (int v = threadIdx.x; v < MT * 8 * kVecPerRow; v += kThreads) {
      const int r = v / kVecPerRow, cv = v % kVecPerRow;
      const int64_t kk = c0 * kTileK + cv * 8;
      uint4 val = make_uint4(0, 0, 0, 0);
      if (r < p.a.m && kk < p.a.k) val = __ldg(reinterpret_cast<const uint4*>(p.a.x + r * p.a.k + kk));
      *reinterpret_cast<uint4*>(&xs[r][cv * 8]) = val;
    }
    __syncthreads();
    if (c0 + kChunkTiles < kt1) load_chunk(c0 + kChunkTiles, nxt_c, nxt_s);

    if (active) {
#pragma unroll
      for (int i = 0; i < kChunkTiles; ++i) {
        if (c0 + i >= kt1) break;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int kc = i * kTileK + j * 16;  // column in xs
          if (c0 * kTileK + kc >= p.a.k) break;  // padded k16 steps (weights are zero too)
          uint32_t a[4];
          a_fragment<NV>(cur_c[i], cur_s[i], j, a);
#pragma unroll
          for (int t = 0; t < MT; ++t) {
            const uint32_t b0 = *reinterpret_cast<const uint32_t*>(&xs[t * 8 + g][kc + 2 * q]);
            const uint32_t b1 = *reinterpret_cast<const uint32_t*>(&xs[t * 8 + g][kc + 2 * q + 8]);
            mma_bf16(acc[t], a, b0, b1);
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kChunkTiles; ++i) cur_c[i] = nxt_c[i], cur_s[i] = nxt_s[i];
  }

  // ---- epilogue ----
  const detail::RangeScales rs{p.a.range_begin, p.a.range_scale, p.a.num_ranges, p.a.alpha};
  const int64_t n0 = strip * kTileRows + g, n1 = n0 + 8;
  if (p.splits == 1) {
    if (!active) return;
    const float f0 = n0 < p.a.n ? detail::row_factor(rs, n0) : 0.0f;
    const float f1 = n1 < p.a.n ? detail::row_factor(rs, n1) : 0.0f;
#pragma unroll
    for (int t = 0; t < MT; ++t) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t tok = t * 8 + 2 * q + e;
        if (tok >= p.a.m) continue;
        if (n0 < p.a.n) detail::store_out(p.a.y, p.a.y_f32, tok * p.a.n + n0, acc[t][e] * f0);
        if (n1 < p.a.n) detail::store_out(p.a.y, p.a.y_f32, tok * p.a.n + n1, acc[t][2 + e] * f1);
      }
    }
    return;
  }
  // Split-K: partials [split][tok][npad], then the last CTA of this column reduces.
  const int64_t npad = static_cast<int64_t>(gridDim.x) * kDecodeRowsPerCta;
  unsigned* counters = static_cast<unsigned*>(p.a.workspace);
  float* part = reinterpret_cast<float*>(static_cast<char*>(p.a.workspace) + ((gridDim.x * 4 + 15) / 16) * 16);
  float* mine = part + static_cast<int64_t>(blockIdx.y) * p.a.m * npad;
  if (active) {
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t tok = t * 8 + 2 * q + e;
        if (tok >= p.a.m) continue;
        __stcg(mine + tok * npad + n0, acc[t][e]);
        __stcg(mine + tok * npad + n1, acc[t][2 + e]);
      }
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned prev = atomicAdd(&counters[blockIdx.x], 1u);
    last_flag = prev == static_cast<unsigned>(p.splits - 1);
  }
  __syncthreads();
  if (!last_flag) return;
  __threadfence();
  if (active) {
    const float f0 = n0 < p.a.n ? detail::row_factor(rs, n0) : 0.0f;
    const float f1 = n1 < p.a.n ? detail::row_factor(rs, n1) : 0.0f;
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t tok = t * 8 + 2 * q + e;
        if (tok >= p.a.m) continue;
        float s0 = 0.0f, s1 = 0.0f;
        for (int sp = 0; sp < p.splits; ++sp) {
          const float* src = part + static_cast<int64_t>(sp) * p.a.m * npad + tok * npad;
          s0 += __ldcg(src + n0);
          s1 += __ldcg(src + n1);
        }
        if (n0 < p.a.n) detail::store_out(p.a.y, p.a.y_f32, tok * p.a.n + n0, s0 * f0);
        if (n1 < p.a.n) detail::store_out(p.a.y, p.a.y_f32, tok * p.a.n + n1, s1 * f1);
      }
  }
  if (threadIdx.x == 0) counters[blockIdx.x] = 0;  // ready for the next call / graph replay
}

template <int MT>
cudaError_t launch_mt(const DecodeParams& p, dim3 grid, cudaStream_t s) {
  if (p.a.nvfp4) w4a16_decode_kernel<MT, true><<<grid, kThreads, 0, s>>>(p);
  else w4a16_decode_kernel<MT, false><<<grid, kThreads, 0, s>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_w4a16_decode(const W4Args& a, const W4Config& c, cudaStream_t s) {
  if (a.m == 0) return cudaSuccess;
  DecodeParams p{a, c.splits, (a.ktiles + c.splits - 1) / c.splits};
  p.splits = static_cast<int>((a.ktiles + p.tiles_per_split - 1) / p.tiles_per_split);  // no empty split
  const int64_t strips = (a.n + kTileRows - 1) / kTileRows;
  const dim3 grid(static_cast<unsigned>((strips + kWarps - 1) / kWarps), static_cast<unsigned>(p.splits));
  switch (c.mtiles) {
    case 1: return launch_mt<1>(p, grid, s);
    case 2: return launch_mt<2>(p, grid, s);
    case 4: return launch_mt<4>(p, grid, s);
    case 8: return launch_mt<8>(p, grid, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace fp4moe::cuda
