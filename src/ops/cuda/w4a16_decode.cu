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
//   - Activations of a chunk (m x 256 bf16) are staged once per CTA in shared memory by
//     cp.async, double-buffered like the weights, and shared by the 8 strips; rows are
//     padded by 16 bytes so ldmatrix reads the 8 rows of a B fragment without conflicts.
//   - The product is mma.sync m16n8k16 with the weight as A (16 rows) and up to 64 tokens
//     as 1..8 B tiles of 8, so decode at m = 1 uses the same instruction as m = 64.
//   - Split-K partials go to an fp32 workspace; the last CTA of a column (atomic counter)
//     adds them in split order and writes y: deterministic, no float atomics, and the
//     counter is reset for the next call (CUDA-graph replay safe).
// Measured limit (bench/RESULTS.md, ncu): integer instruction issue of the dequantization
// (ALU pipe ~62% busy at 64% issue), 0.41-0.65 of the HBM read roof at m <= 16.
#include <cuda_bf16.h>

#include "ops/cuda/w4a16_common.cuh"
#include "ops/cuda/w4a16_kernels.h"

namespace fp4moe::cuda {
namespace {

using detail::a_fragment;
using detail::b_fragments;
using detail::cp_async16;
using detail::cp_async_commit;
using detail::cp_async_wait;
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


template <int MT>
constexpr int smem_bytes() { return 2 * MT * 8 * kXPitch * 2; }  // two chunk buffers of activations

// Stage activations [MT*8 tokens][256 k] of the chunk starting at k-tile c0 (zeros past m, k).
template <int MT>
__device__ __forceinline__ void stage_x(const DecodeParams& p, int64_t c0, __nv_bfloat16* xs) {
  constexpr int kVecPerRow = kChunkK / 8;
  for (int v = threadIdx.x; v < MT * 8 * kVecPerRow; v += kThreads) {
    const int r = v / kVecPerRow, cv = v % kVecPerRow;
    const int64_t kk = c0 * kTileK + cv * 8;
    const bool ok = r < p.a.m && kk < p.a.k;
    cp_async16(xs + r * kXPitch + cv * 8, ok ? p.a.x + r * p.a.k + kk : p.a.x, ok);
  }
}


// Epilogue shared by both decode kernels: scale and store (one split), or write the fp32
// partial, and let the last CTA of the column add the partials in split order.
template <int MT>
__device__ __forceinline__ void epilogue(const DecodeParams& p, const float (&acc)[MT][4], int64_t strip, bool active,
                                         int g, int q, int& last_flag) {
  const detail::RangeScales rs{p.a.range_begin, p.a.range_scale, p.a.num_ranges, p.a.alpha};
  const int64_t n0 = strip * kTileRows + g, n1 = n0 + 8;
  // Writes rows n0, n1 of y for this lane's tokens; value(t, e, half) gives the sum.
  auto write_rows = [&](auto value) {
    const float f0 = n0 < p.a.n ? detail::row_factor(rs, n0) : 0.0f;
    const float f1 = n1 < p.a.n ? detail::row_factor(rs, n1) : 0.0f;
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t tok = t * 8 + 2 * q + e;
        if (tok >= p.a.m) continue;
        if (n0 < p.a.n) detail::store_out(p.a.y, p.a.y_f32, tok * p.a.n + n0, value(t, e, 0) * f0);
        if (n1 < p.a.n) detail::store_out(p.a.y, p.a.y_f32, tok * p.a.n + n1, value(t, e, 1) * f1);
      }
  };
  if (p.splits == 1) {
    if (active) write_rows([&](int t, int e, int h) { return acc[t][2 * h + e]; });
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
    write_rows([&](int t, int e, int h) {
      const int64_t tok = t * 8 + 2 * q + e;
      const int64_t n = h ? n1 : n0;
      float sum = 0.0f;
#pragma unroll 4
      for (int sp = 0; sp < p.splits; ++sp) sum += __ldcg(part + (static_cast<int64_t>(sp) * p.a.m + tok) * npad + n);
      return sum;
    });
  }
  if (threadIdx.x == 0) counters[blockIdx.x] = 0;  // ready for the next call / graph replay
}

template <int MT, bool NV>
__global__ void __launch_bounds__(kThreads, MT == 1 ? 3 : 2) w4a16_decode_kernel(const DecodeParams p) {
  extern __shared__ __align__(16) __nv_bfloat16 xbuf[];  // [2][MT*8][kXPitch]
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
  // Prologue: weights and activations of the first chunk in flight.
  if (kt0 < kt1) load_chunk(kt0, cur_c, cur_s);
  stage_x<MT>(p, kt0, xbuf);
  cp_async_commit();

  int buf = 0;
  for (int64_t c0 = kt0; c0 < kt1; c0 += kChunkTiles, buf ^= 1) {
    // Next chunk: weights to registers, activations to the other buffer, both in flight
    // while this chunk is multiplied.
    const bool more = c0 + kChunkTiles < kt1;
    if (more) {
      load_chunk(c0 + kChunkTiles, nxt_c, nxt_s);
      stage_x<MT>(p, c0 + kChunkTiles, xbuf + (buf ^ 1) * MT * 8 * kXPitch);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const __nv_bfloat16* xs = xbuf + buf * MT * 8 * kXPitch;
    if (active) {
#pragma unroll
      for (int i = 0; i < kChunkTiles; ++i) {
        if (c0 + i >= kt1) break;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int kc = i * kTileK + j * 16;  // column in xs
          if (c0 * kTileK + kc >= p.a.k) break;  // padded k16 steps (weights are zero too)
          uint32_t a[4], b[MT][2];
          b_fragments<MT, kXPitch>(xs, kc, lane, b);
          a_fragment<NV>(cur_c[i], cur_s[i], j, a);
#pragma unroll
          for (int t = 0; t < MT; ++t) mma_bf16(acc[t], a, b[t][0], b[t][1]);
        }
      }
    }
    __syncthreads();  // this buffer is refilled two chunks from now
#pragma unroll
    for (int i = 0; i < kChunkTiles; ++i) cur_c[i] = nxt_c[i], cur_s[i] = nxt_s[i];
  }

  epilogue<MT>(p, acc, strip, active, g, q, last_flag);
}

template <int MT, bool NV>
cudaError_t launch_one(const DecodeParams& p, dim3 grid, cudaStream_t s) {
  constexpr int bytes = smem_bytes<MT>();
  if constexpr (bytes > 48 * 1024) {
    static bool attr_set = false;  // raised once per instantiation (before any graph capture)
    if (!attr_set) {
      const cudaError_t e = cudaFuncSetAttribute(w4a16_decode_kernel<MT, NV>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
      if (e != cudaSuccess) return e;
      attr_set = true;
    }
  }
  w4a16_decode_kernel<MT, NV><<<grid, kThreads, bytes, s>>>(p);
  return cudaGetLastError();
}
template <int MT>
cudaError_t launch_mt(const DecodeParams& p, dim3 grid, cudaStream_t s) {
  return p.a.nvfp4 ? launch_one<MT, true>(p, grid, s) : launch_one<MT, false>(p, grid, s);
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
