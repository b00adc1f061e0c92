// Grouped FP4 GEMM of the MoE layer for many tokens per expert (prefill): the register-A
// wgmma mainloop (w4a16_wgmma.cuh, wgmma_mainloop_rs: each warp's dequantized weight
// fragments go straight to the asynchronous tensor cores, the activations come from shared
// memory) over token tiles of the expert segments, with the grouped kernels' tile lookup and
// epilogues (moe_grouped.cuh describes the data flow):
//   - Token tiles of BM = 128 tokens, or 96 (mtiles 12) when the experts' mean load is
//     49-72 tokens (V4-Pro at T = 4096, 64 per expert: one 96-token tile per expert fills
//     it to 0.67 where a 128-token tile would be half empty: a quarter less tensor work and
//     activation traffic through shared memory for the same dequantization; measured -15%,
//     notes/gpu-notes.md step 25). moe_mtiles (moe.cu) picks the size from T x top-k / experts.
//   - One CTA = 256 weight rows of ONE expert x one tile of up to BM tokens of its segment,
//     over all of k: two strips per warp (the mainloop's SPW = 2), so each warpgroup issues
//     two m64nBMk16 per k16 step on the same activation tile, and one activation tile
//     (copies, barriers, fences) serves twice the weight rows of the linear's CTA. The tile
//     comes from blockIdx by a binary search over the device tile offsets, so the grid is
//     sized on the host from T alone and experts with no tokens own no tile. The activation
//     rows are gathered through sorted_tok (gate|up) or read in segment order (down).
//   - gate|up: row block b = intermediate columns [128 b, 128 b + 128); warpgroup 0 owns the
//     gate rows, warpgroup 1 the matching up rows I + [128 b, ...): thread (w + 4, lane) holds
//     the up value of the gate value that thread (w, lane) holds. The up half is rounded and
//     handed over through shared memory; the gate half writes
//     a = rd(rd(silu(min(g, L))) * clamp(u, -L, L)), as the decode-regime kernel. When I is an
//     odd multiple of 64 the last block's second half reads zeros and writes nothing.
//   - down: row block b = y columns [256 b, 256 b + 256), bf16, in segment order; strips past
//     H read zeros and write nothing. The routing weight is applied by the combine.
//   - No split-K, k in order: a token's result does not depend on the other tokens of its tile,
//     nor on the CTA shape (every output element is the same k16 sequence of accumulations).
#include <cuda_bf16.h>

#include "ops/cuda/moe_kernels.h"
#include "ops/cuda/w4a16_wgmma.cuh"

namespace fp4moe::cuda {
namespace {

constexpr int kSPW = 2;  // strips per warp

// The sizes of one token-tile shape.
template <int BM>
struct Shape {
  using Tile = wgmma::RsTile<BM>;
  static constexpr int kAcc = BM / 2;                 // accumulators per thread per m64 block
  static constexpr int kRows = Tile::kRows;           // weight rows per CTA (256)
  static constexpr int kGateCols = kRows / 2;         // gate|up: intermediate columns per CTA (128)
  static constexpr int kExchangeBytes = 128 * kSPW * kAcc * 4;  // gate|up: the up half, [kSPW * kAcc][128 threads] fp32
  static_assert(BM % 32 == 0 && BM <= 128, "whole 8-token groups of the accumulators, at most 128 tokens");
  static_assert(kExchangeBytes + BM * wgmma::out_pitch(kGateCols) <= Tile::kStages * Tile::kStageBytes &&
                    kExchangeBytes + BM * wgmma::out_pitch(kRows) <= Tile::kStages * Tile::kStageBytes,
                "the exchange buffer and the staging tile fit in the pipeline stages");
};

template <int BM, bool NV, bool GATEUP>
__global__ void __launch_bounds__(wgmma::kThreads, 1) moe_wgmma_kernel(const MoeGroupedArgs a, int row_blocks) {
  using S = Shape<BM>;
  using Tile = typename S::Tile;
  constexpr int kBM = BM, kAcc = S::kAcc, kRows = S::kRows, kGateCols = S::kGateCols;
  constexpr int kExchangeBytes = S::kExchangeBytes;
  // Launched in plain stream order (launch() ignores a.pdl): everything the earlier kernels
  // wrote is visible, so there is no griddepcontrol.wait here.
  const int64_t bid = blockIdx.x;
  const int rb = static_cast<int>(bid % row_blocks);
  MoeTileRef tr;
  if (!moe_find_tile(a, bid / row_blocks, kBM, tr)) return;  // uniform: past the last real tile
  const int e = tr.e;
  const int64_t row0 = tr.row0;
  const int rows = tr.rows;

  // Slot s * 8 + w (warp w's strip s) = rows 64 s + 16 (w % 4) of warpgroup w / 4's 128 rows.
  const int64_t strips = (a.n + kTileRows - 1) / kTileRows, istrips = a.inter / kTileRows;
  auto strip_of = [&](int slot) -> int64_t {  // global strip of the CTA's slot (0..15), -1 past the matrix
    const int s = slot / 8, w = slot % 8;
    if constexpr (GATEUP) {
      const int64_t c = static_cast<int64_t>(rb) * 8 + s * 4 + w % 4;  // strip of the intermediate
      return c >= istrips ? -1 : w < 4 ? c : istrips + c;
    } else {
      const int64_t st = static_cast<int64_t>(rb) * 16 + (w / 4) * 8 + s * 4 + w % 4;
      return st < strips ? st : -1;
    }
  };
  const __nv_bfloat16* xrow[Tile::kXCopies];
#pragma unroll
  for (int i = 0; i < Tile::kXCopies; ++i) {
    const int r = threadIdx.x / 8 + 32 * i;
    const int64_t src = r < rows ? moe_src_row(a, tr, r) : -1;
    xrow[i] = src >= 0 ? a.x + src * a.k + (threadIdx.x % 8) * 8 : nullptr;
  }
  constexpr int kSvec = (NV ? kNvScaleBytesPerTile : kMxScaleBytesPerTile) / 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sw = threadIdx.x / kSvec;
  const int64_t ws[kSPW] = {strip_of(warp), strip_of(8 + warp)};
  float acc[kSPW * kAcc];
  wgmma::wgmma_mainloop_rs<kBM, NV>(xrow, ws, sw < Tile::kStrips ? strip_of(sw) : -1, a.codes + e * a.code_stride,
                                    a.scales + e * a.scale_stride, a.ktiles, a.k, a.x, acc);

  const int g = lane / 4, q = lane % 4;
  // Accumulator s * kAcc + 4t + h (+2): token 8t + 2q + h, row g (+8) of this warp's strip s.
  // Results go through a staging tile in shared memory and leave as 16-byte row segments.
  uint8_t* const smem = wgmma::smem_tile_base();
  uint8_t* const out_tile = smem + kExchangeBytes;  // after the gate|up exchange buffer
  __syncthreads();                                  // every warp is past its last read of the stages
  if constexpr (GATEUP) {
    constexpr int kPitch = wgmma::out_pitch(kGateCols);
    const float f = a.gscale[2 * e + (warp < 4 ? 0 : 1)] * kEpilogueUnscale;
    float* ep = reinterpret_cast<float*>(smem);  // [kSPW * kAcc][128 threads]
    if (warp >= 4) {
#pragma unroll
      for (int i = 0; i < kSPW * kAcc; ++i) ep[i * 128 + threadIdx.x - 128] = __bfloat162float(__float2bfloat16_rn(acc[i] * f));
    }
    __syncthreads();
    if (warp < 4) {
      const float L = a.swiglu_limit;
#pragma unroll
      for (int s = 0; s < kSPW; ++s)
#pragma unroll
        for (int t = 0; t < kBM / 8; ++t)
#pragma unroll
          for (int h = 0; h < 4; ++h) {
            const int i = s * kAcc + 4 * t + h;
            const int tok = t * 8 + 2 * q + (h & 1);
            const int col = s * 64 + warp * 16 + g + (h >> 1) * 8;  // intermediate column - 128 rb
            const float gv = fminf(__bfloat162float(__float2bfloat16_rn(acc[i] * f)), L);
            const float uv = fminf(fmaxf(ep[i * 128 + threadIdx.x], -L), L);
            const float silu = __bfloat162float(__float2bfloat16_rn(__fdiv_rn(gv, __fadd_rn(1.0f, expf(-gv)))));
            *reinterpret_cast<__nv_bfloat16*>(out_tile + tok * kPitch + col * 2) = __float2bfloat16_rn(__fmul_rn(silu, uv));
          }
    }
    __syncthreads();
    const int64_t col0 = static_cast<int64_t>(rb) * kGateCols;
    const int cols = static_cast<int>(a.inter - col0 < kGateCols ? a.inter - col0 : kGateCols);
    wgmma::store_tile<kGateCols>(out_tile, rows, cols, [&](int r) { return a.y + (row0 + r) * a.inter + col0; });
  } else {
    constexpr int kPitch = wgmma::out_pitch(kRows);
    const float f = a.gscale[e] * kEpilogueUnscale;
#pragma unroll
    for (int s = 0; s < kSPW; ++s)
      wgmma::stage_block_bf16<kBM, kPitch>(acc + s * kAcc, f, f, (warp / 4) * 128 + s * 64 + (warp % 4) * 16, out_tile);
    __syncthreads();
    const int64_t col0 = static_cast<int64_t>(rb) * kRows;
    const int cols = static_cast<int>(a.n - col0 < kRows ? a.n - col0 : kRows);
    wgmma::store_tile<kRows>(out_tile, rows, cols, [&](int r) { return a.y + (row0 + r) * a.n + col0; });
  }
}

template <int BM, bool NV, bool GATEUP>
cudaError_t launch(const MoeGroupedArgs& a, cudaStream_t s) {
  using S = Shape<BM>;
  if (a.max_tiles == 0) return cudaSuccess;
  const int row_blocks =
      GATEUP ? static_cast<int>((a.inter + S::kGateCols - 1) / S::kGateCols) : static_cast<int>((a.n + S::kRows - 1) / S::kRows);
  const int64_t blocks = a.max_tiles * row_blocks;
  // A plain launch (no programmatic dependence), whose own error is returned: an earlier,
  // unrelated error is neither reported as this launch's nor cleared.
  return moe_launch(moe_wgmma_kernel<BM, NV, GATEUP>, dim3(static_cast<unsigned>(blocks)), dim3(wgmma::kThreads),
                    static_cast<size_t>(S::Tile::kSmemBytes), s, false, a, row_blocks);
}

template <int BM>
cudaError_t launch_shape(const MoeGroupedArgs& a, bool gate_up, cudaStream_t s) {
  if (gate_up) return a.nvfp4 ? launch<BM, true, true>(a, s) : launch<BM, false, true>(a, s);
  return a.nvfp4 ? launch<BM, true, false>(a, s) : launch<BM, false, false>(a, s);
}

template <int BM>
cudaError_t prepare_shape() {
  cudaError_t e = cudaSuccess;
  auto raise = [&](auto kernel) {
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Shape<BM>::Tile::kSmemBytes);
  };
  raise(moe_wgmma_kernel<BM, true, true>);
  raise(moe_wgmma_kernel<BM, false, true>);
  raise(moe_wgmma_kernel<BM, true, false>);
  raise(moe_wgmma_kernel<BM, false, false>);
  return e;
}

}  // namespace

cudaError_t launch_moe_wgmma(const MoeGroupedArgs& a, bool gate_up, cudaStream_t s) {
  if (a.mtiles == kMoeWgmmaTiles) return launch_shape<8 * kMoeWgmmaTiles>(a, gate_up, s);
  if (a.mtiles == kMoeWgmmaTilesSmall) return launch_shape<8 * kMoeWgmmaTilesSmall>(a, gate_up, s);
  return cudaErrorInvalidValue;
}

cudaError_t moe_prepare_wgmma() {
  const cudaError_t e = prepare_shape<8 * kMoeWgmmaTiles>();
  return e != cudaSuccess ? e : prepare_shape<8 * kMoeWgmmaTilesSmall>();
}

}  // namespace fp4moe::cuda
