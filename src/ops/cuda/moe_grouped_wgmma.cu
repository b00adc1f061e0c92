// Grouped FP4 GEMM of the MoE layer for many tokens per expert (prefill): the wgmma mainloop
// of the prefill linear (w4a16_wgmma.cuh: weights dequantized into shared memory,
// asynchronous tensor cores) over 128-token tiles of the expert segments, with the grouped
// kernels' tile lookup and epilogues (moe_grouped.cuh describes the data flow):
//   - One CTA = 128 weight rows of ONE expert x one tile of up to 128 tokens of its segment,
//     over all of k. The tile comes from blockIdx by a binary search over the device tile
//     offsets, so the grid is sized on the host from T alone and experts with no tokens own no
//     tile. The activation rows are gathered through sorted_tok (gate|up) or read in segment
//     order (down).
//   - gate|up: warpgroup 0 owns gate rows [64 b, 64 b + 64), warpgroup 1 the matching up rows
//     I + [64 b, ...): thread (w + 4, lane) holds the up value of the gate value that thread
//     (w, lane) holds. The up half is rounded and handed over through shared memory; the gate
//     half writes a = rd(rd(silu(min(g, L))) * clamp(u, -L, L)), as the decode-regime kernel.
//   - down: y rows in segment order, bf16; the routing weight is applied by the combine.
//   - No split-K, k in order: a token's result does not depend on the other tokens of its tile.
#include <cuda_bf16.h>

#include "ops/cuda/moe_kernels.h"
#include "ops/cuda/w4a16_wgmma.cuh"

namespace fp4moe::cuda {
namespace {

constexpr int kBM = kMoeWgmmaTileTokens;
using Tile = wgmma::Tile<kBM>;
static_assert(kBM == 128, "the epilogue exchange below is sized for 128-token tiles");

template <bool NV, bool GATEUP>
__global__ void __launch_bounds__(wgmma::kThreads, 1) moe_wgmma_kernel(const MoeGroupedArgs a, int row_blocks) {
  // Launched in plain stream order (launch() ignores a.pdl): everything the earlier kernels
  // wrote is visible, so there is no griddepcontrol.wait here.
  const int64_t bid = blockIdx.x;
  const int rb = static_cast<int>(bid % row_blocks);
  const int64_t tile = a.tile_off[a.slot_begin] + bid / row_blocks;
  if (tile >= a.tile_off[a.slot_end]) return;  // uniform: past the last real tile
  const int e = moe_tile_slot(a.tile_off, a.slot_begin, a.slot_end, tile);
  const int64_t row0 = a.seg_off[e] + (tile - a.tile_off[e]) * kBM;
  const int rows = static_cast<int>(min(static_cast<int64_t>(kBM), static_cast<int64_t>(a.seg_off[e + 1]) - row0));

  const int64_t strips = (a.n + kTileRows - 1) / kTileRows;
  auto strip_of = [&](int w) -> int64_t {  // global strip of the CTA's strip w (0..7), -1 past the matrix
    int64_t s;
    if constexpr (GATEUP) s = w < 4 ? rb * 4 + w : a.inter / kTileRows + rb * 4 + (w - 4);
    else s = static_cast<int64_t>(rb) * 8 + w;
    return s < strips ? s : -1;
  };
  const __nv_bfloat16* xrow[Tile::kXCopies];
#pragma unroll
  for (int i = 0; i < Tile::kXCopies; ++i) {
    const int r = threadIdx.x / 8 + 32 * i;
    const int64_t src = r < rows ? (a.sorted_tok ? static_cast<int64_t>(a.sorted_tok[row0 + r]) : row0 + r) : -1;
    xrow[i] = src >= 0 ? a.x + src * a.k + (threadIdx.x % 8) * 8 : nullptr;
  }
  constexpr int kSvec = (NV ? kNvScaleBytesPerTile : kMxScaleBytesPerTile) / 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sw = threadIdx.x / kSvec;
  float acc[kBM / 2];
  wgmma::wgmma_mainloop<kBM, NV>(xrow, strip_of(warp), sw < wgmma::kStrips ? strip_of(sw) : -1,
                                 a.codes + e * a.code_stride, a.scales + e * a.scale_stride, a.ktiles, a.k, a.x, acc);

  const int g = lane / 4, q = lane % 4;
  // Accumulator 4t + h (+2): token 8t + 2q + h, row g (+8) of this warp's strip. Results go
  // through a staging tile in shared memory and leave as 16-byte row segments.
  uint8_t* const smem = wgmma::smem_tile_base();
  uint8_t* const out_tile = smem + 32 * 1024;  // after the gate|up exchange buffer
  __syncthreads();                             // every warp is past its last read of the stages
  if constexpr (GATEUP) {
    const float f = a.gscale[2 * e + (warp < 4 ? 0 : 1)] * kEpilogueUnscale;
    float* ep = reinterpret_cast<float*>(smem);  // [kBM/2][128 threads]
    if (warp >= 4) {
#pragma unroll
      for (int i = 0; i < kBM / 2; ++i) ep[i * 128 + threadIdx.x - 128] = __bfloat162float(__float2bfloat16_rn(acc[i] * f));
    }
    __syncthreads();
    if (warp < 4) {
      const float L = a.swiglu_limit;
#pragma unroll
      for (int t = 0; t < kBM / 8; ++t)
#pragma unroll
        for (int h = 0; h < 4; ++h) {
          const int i = 4 * t + h;
          const int tok = t * 8 + 2 * q + (h & 1), col = warp * 16 + g + (h >> 1) * 8;  // intermediate column - 64 rb
          const float gv = fminf(__bfloat162float(__float2bfloat16_rn(acc[i] * f)), L);
          const float uv = fminf(fmaxf(ep[i * 128 + threadIdx.x], -L), L);
          const float silu = __bfloat162float(__float2bfloat16_rn(__fdiv_rn(gv, __fadd_rn(1.0f, expf(-gv)))));
          *reinterpret_cast<__nv_bfloat16*>(out_tile + tok * wgmma::kOutPitch + col * 2) = __float2bfloat16_rn(__fmul_rn(silu, uv));
        }
    }
    __syncthreads();
    wgmma::store_tile(out_tile, rows, 64, [&](int r) { return a.y + (row0 + r) * a.inter + static_cast<int64_t>(rb) * 64; });
  } else {
    const float f = a.gscale[e] * kEpilogueUnscale;
    wgmma::stage_acc_bf16<kBM>(acc, f, f, out_tile);
    __syncthreads();
    const int64_t col0 = static_cast<int64_t>(rb) * 128;
    const int cols = static_cast<int>(a.n - col0 < 128 ? a.n - col0 : 128);
    wgmma::store_tile(out_tile, rows, cols, [&](int r) { return a.y + (row0 + r) * a.n + col0; });
  }
}

template <bool NV, bool GATEUP>
cudaError_t launch(const MoeGroupedArgs& a, cudaStream_t s) {
  if (a.max_tiles == 0) return cudaSuccess;
  const int row_blocks = GATEUP ? static_cast<int>(a.inter / 64) : static_cast<int>((a.n + 127) / 128);
  const int64_t blocks = a.max_tiles * row_blocks;
  moe_wgmma_kernel<NV, GATEUP><<<static_cast<unsigned>(blocks), wgmma::kThreads, Tile::kSmemBytes, s>>>(a, row_blocks);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_moe_wgmma(const MoeGroupedArgs& a, bool gate_up, cudaStream_t s) {
  if (gate_up) return a.nvfp4 ? launch<true, true>(a, s) : launch<false, true>(a, s);
  return a.nvfp4 ? launch<true, false>(a, s) : launch<false, false>(a, s);
}

cudaError_t moe_prepare_wgmma() {
  cudaError_t e = wgmma::raise_wgmma_smem<kBM>(moe_wgmma_kernel<true, true>);
  if (e == cudaSuccess) e = wgmma::raise_wgmma_smem<kBM>(moe_wgmma_kernel<false, true>);
  if (e == cudaSuccess) e = wgmma::raise_wgmma_smem<kBM>(moe_wgmma_kernel<true, false>);
  if (e == cudaSuccess) e = wgmma::raise_wgmma_smem<kBM>(moe_wgmma_kernel<false, false>);
  return e;
}

}  // namespace fp4moe::cuda
