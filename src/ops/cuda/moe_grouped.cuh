// Grouped FP4 GEMM over the expert segments of a MoE layer (gate|up with the clamped SwiGLU
// in the epilogue, and down) for tiles of 16, 32 or 64 tokens (tiles of at most 8 tokens, and
// 16-token tiles where their whole-k stage fits, run the weight-streaming kernel of
// moe_stream.cuh), built on the W4A16 decode kernel's structure
// and device helpers (w4a16_decode.cu, w4a16_common.cuh):
//   - One CTA = 8 warps = 8 strips of 16 weight rows of ONE expert, over all of k, for one
//     tile of up to 8*MT tokens of that expert's segment. The tile is found from blockIdx by
//     a binary search over the device tile offsets (moe_kernels.h), so the grid is sized on
//     the host from T alone (no host synchronization) and CTAs past the last real tile exit
//     at once; experts with no tokens own no tile and cost nothing.
//   - Weights stream to registers (16-byte evict-first loads, a chunk of 4 tiles ahead); the tile's activation rows are gathered by cp.async into shared memory (double
//     buffered) through sorted_tok (gate|up: x rows of the tokens) or read in place (down:
//     h rows in segment order). mma.sync m16n8k16 with the weight as A.
//   - gate|up: warps 0-3 own gate rows [64 b, 64 b + 64), warps 4-7 the matching up rows
//     I + [64 b, ...), so one CTA holds both halves of 64 intermediate columns: the epilogue
//     applies each half's own global scale, rounds to bf16 (the linear's output dtype),
//     exchanges through shared memory and writes a = rd(rd(silu(min(g, L))) * clamp(u, -L, L)).
//   - down: y rows in segment order, bf16; the routing weight is applied by the combine.
//   - b_fragments and the cp.async wrappers are the decode kernel's (w4a16_common.cuh).
//   - No split-K: a token's result never depends on the other tokens of its tile or on the
//     tile size (batch invariance), and the k order is fixed (run-to-run identical bits).
#pragma once

#include <cuda_bf16.h>

#include "ops/cuda/moe_kernels.h"
#include "ops/cuda/moe_stream.cuh"
#include "ops/cuda/w4a16_common.cuh"

namespace fp4moe::cuda::moe_detail {

using detail::a_fragment;
using detail::b_fragments;
using detail::cp_async16;
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::mma_bf16;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
// k-tiles per chunk (4 tiles, 2.3 KB of weights in flight per warp, at 2 CTAs/SM).
template <int MT>
constexpr int chunk_tiles() { return 4; }
template <int MT>
constexpr int x_pitch() { return chunk_tiles<MT>() * kTileK + 8; }  // bf16 per smem row (+16 bytes: conflict-free ldmatrix)
constexpr int kEpPitch = 128 + 1;     // fp32 per epilogue row (gate|up exchange)

template <int MT>
constexpr int smem_bytes() { return 2 * MT * 8 * x_pitch<MT>() * 2; }
static_assert(8 * kEpPitch * 4 <= smem_bytes<2>(), "the gate|up exchange fits in the activation buffers");



template <int MT, bool NV, bool GATEUP>
__global__ void __launch_bounds__(kThreads, 2) moe_grouped_kernel(const MoeGroupedArgs a, int row_blocks) {
  extern __shared__ __align__(16) __nv_bfloat16 xbuf[];  // [2][MT*8][kXPitch]
  __shared__ int64_t src_row[MT * 8];
  constexpr int kTok = MT * 8;
  constexpr int kChunkTiles = chunk_tiles<MT>();
  constexpr int kChunkK = kChunkTiles * kTileK;
  constexpr int kXPitch = x_pitch<MT>();

  moe_pdl_wait();  // the offsets and activations come from the previous kernels
  moe_pdl_trigger();
  const int64_t bid = blockIdx.x;
  const int rb = static_cast<int>(bid % row_blocks);
  MoeTileRef tr;
  if (!moe_find_tile(a, bid / row_blocks, kTok, tr)) return;  // uniform: past the last real tile
  const int e = tr.e;
  const int64_t row0 = tr.row0;
  const int rows = tr.rows;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q = lane % 4;
  const int64_t strips = (a.n + kTileRows - 1) / kTileRows;
  int64_t strip;
  if constexpr (GATEUP) strip = warp < 4 ? rb * 4 + warp : a.inter / kTileRows + rb * 4 + (warp - 4);
  else strip = static_cast<int64_t>(rb) * kWarps + warp;
  const bool active = strip < strips;
  const uint8_t* codes = a.codes + e * a.code_stride;
  const uint8_t* scales = a.scales + e * a.scale_stride;
  const int64_t tile_base = strip * a.ktiles;

  if (threadIdx.x < kTok) {
    const int r = threadIdx.x;
    src_row[r] = r < rows ? moe_src_row(a, tr, r) : -1;
  }
  __syncthreads();

  auto stage_x = [&](int64_t c0, __nv_bfloat16* xs) {
    constexpr int kVecPerRow = kChunkK / 8;
    for (int v = threadIdx.x; v < kTok * kVecPerRow; v += kThreads) {
      const int r = v / kVecPerRow, cv = v % kVecPerRow;
      const int64_t kk = c0 * kTileK + cv * 8;
      const int64_t sr = src_row[r];
      const bool ok = sr >= 0 && kk < a.k;
      cp_async16(xs + r * kXPitch + cv * 8, ok ? a.x + sr * a.k + kk : a.x, ok);
    }
  };
  auto load_tile = [&](int64_t t, uint4& c, uint2& s) {
    c = __ldcs(reinterpret_cast<const uint4*>(codes + t * kTileCodeBytes) + lane);
    if constexpr (NV) {
      s = __ldcs(reinterpret_cast<const uint2*>(scales + t * kNvScaleBytesPerTile) + (lane >> 2));
    } else {
      s.x = __ldcs(reinterpret_cast<const uint32_t*>(scales + t * kMxScaleBytesPerTile) + (lane >> 2));
      s.y = 0;
    }
  };

  float acc[MT][4];
#pragma unroll
  for (int t = 0; t < MT; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
  uint4 cur_c[kChunkTiles], nxt_c[kChunkTiles];
  uint2 cur_s[kChunkTiles], nxt_s[kChunkTiles];
  auto load_chunk = [&](int64_t c0, uint4 (&c)[kChunkTiles], uint2 (&s)[kChunkTiles]) {
#pragma unroll
    for (int i = 0; i < kChunkTiles; ++i) {
      if (active && c0 + i < a.ktiles) load_tile(tile_base + c0 + i, c[i], s[i]);
      else c[i] = make_uint4(0, 0, 0, 0), s[i] = make_uint2(0, 0);
    }
  };
  load_chunk(0, cur_c, cur_s);
  stage_x(0, xbuf);
  cp_async_commit();
  int buf = 0;
  for (int64_t c0 = 0; c0 < a.ktiles; c0 += kChunkTiles, buf ^= 1) {
    const bool more = c0 + kChunkTiles < a.ktiles;
    if (more) {
      load_chunk(c0 + kChunkTiles, nxt_c, nxt_s);
      stage_x(c0 + kChunkTiles, xbuf + (buf ^ 1) * kTok * kXPitch);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const __nv_bfloat16* xs = xbuf + buf * kTok * kXPitch;
    if (active) {
#pragma unroll
      for (int i = 0; i < kChunkTiles; ++i) {
        if (c0 + i >= a.ktiles) break;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int kc = i * kTileK + j * 16;
          if (c0 * kTileK + kc >= a.k) break;
          uint32_t af[4], b[MT][2];
          b_fragments<MT, kXPitch>(xs, kc, lane, b);
          a_fragment<NV>(cur_c[i], cur_s[i], j, af);
#pragma unroll
          for (int t = 0; t < MT; ++t) mma_bf16(acc[t], af, b[t][0], b[t][1]);
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kChunkTiles; ++i) cur_c[i] = nxt_c[i], cur_s[i] = nxt_s[i];
  }
  asm volatile("cp.async.wait_group 0;\n" ::);

  const int64_t n0 = strip * kTileRows + g, n1 = n0 + 8;
  if constexpr (GATEUP) {
    const float f = a.gscale[2 * e + (warp < 4 ? 0 : 1)] * kEpilogueUnscale;
    float* ep = reinterpret_cast<float*>(xbuf);  // [kTok][kEpPitch]; the buffers are free now
    const int c = warp * 16 + g;                 // gate columns 0..63, up columns 64..127
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int tok = t * 8 + 2 * q + h;
        ep[tok * kEpPitch + c] = __bfloat162float(__float2bfloat16_rn(acc[t][h] * f));
        ep[tok * kEpPitch + c + 8] = __bfloat162float(__float2bfloat16_rn(acc[t][2 + h] * f));
      }
    __syncthreads();
    const float L = a.swiglu_limit;
    for (int idx = threadIdx.x; idx < rows * 64; idx += kThreads) {
      const int tok = idx / 64, i = idx % 64;
      const float gv = fminf(ep[tok * kEpPitch + i], L);
      const float uv = fminf(fmaxf(ep[tok * kEpPitch + 64 + i], -L), L);
      const float silu = __bfloat162float(__float2bfloat16_rn(__fdiv_rn(gv, __fadd_rn(1.0f, expf(-gv)))));
      a.y[(row0 + tok) * a.inter + static_cast<int64_t>(rb) * 64 + i] = __float2bfloat16_rn(__fmul_rn(silu, uv));
    }
  } else {
    if (!active) return;
    const float f = a.gscale[e] * kEpilogueUnscale;
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int tok = t * 8 + 2 * q + h;
        if (tok >= rows) continue;
        __nv_bfloat16* yr = a.y + (row0 + tok) * a.n;
        if (n0 < a.n) yr[n0] = __float2bfloat16_rn(acc[t][h] * f);
        if (n1 < a.n) yr[n1] = __float2bfloat16_rn(acc[t][2 + h] * f);
      }
  }
}

template <bool GATEUP, int MT, bool NV>
cudaError_t launch_one(const MoeGroupedArgs& a, int row_blocks, cudaStream_t s) {
  const int64_t blocks = a.max_tiles * row_blocks;
  return moe_launch(moe_grouped_kernel<MT, NV, GATEUP>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads),
                    static_cast<size_t>(smem_bytes<MT>()), s, a.pdl, a, row_blocks);
}

template <bool GATEUP>
cudaError_t launch_grouped(const MoeGroupedArgs& a, cudaStream_t s) {
  if (a.max_tiles == 0) return cudaSuccess;
  const int row_blocks = GATEUP ? static_cast<int>(a.inter / 64) : static_cast<int>((a.n + 127) / 128);
  // 16-token tiles stream where their stage fits (moe_stream.cuh), else the grouped kernel.
  const bool stream16 = a.stream16 && moe_stream_stage_fits(a.k, a.tile_tokens);
  switch (a.mtiles * 2 + (a.nvfp4 ? 1 : 0)) {
    case 3: return launch_stream<GATEUP, true>(a, s);
    case 2: return launch_stream<GATEUP, false>(a, s);
    case 5: return stream16 ? launch_stream<GATEUP, true>(a, s) : launch_one<GATEUP, 2, true>(a, row_blocks, s);
    case 4: return stream16 ? launch_stream<GATEUP, false>(a, s) : launch_one<GATEUP, 2, false>(a, row_blocks, s);
    case 9: return launch_one<GATEUP, 4, true>(a, row_blocks, s);
    case 8: return launch_one<GATEUP, 4, false>(a, row_blocks, s);
    case 17: return launch_one<GATEUP, 8, true>(a, row_blocks, s);
    case 16: return launch_one<GATEUP, 8, false>(a, row_blocks, s);
    default: return cudaErrorInvalidValue;
  }
}

template <bool GATEUP>
cudaError_t prepare_grouped() {
  cudaError_t e = cudaSuccess;
  auto raise = [&](auto kernel, int bytes) {
    if (e == cudaSuccess && bytes > 48 * 1024)
      e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  };
  raise(moe_grouped_kernel<8, true, GATEUP>, smem_bytes<8>());
  raise(moe_grouped_kernel<8, false, GATEUP>, smem_bytes<8>());
  raise(moe_grouped_kernel<4, true, GATEUP>, smem_bytes<4>());
  raise(moe_grouped_kernel<4, false, GATEUP>, smem_bytes<4>());
  raise(moe_grouped_kernel<2, true, GATEUP>, smem_bytes<2>());
  raise(moe_grouped_kernel<2, false, GATEUP>, smem_bytes<2>());
  return e != cudaSuccess ? e : prepare_stream<GATEUP>();
}

}  // namespace fp4moe::cuda::moe_detail
