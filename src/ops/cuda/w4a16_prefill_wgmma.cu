// W4A16 prefill linear on Hopper's warpgroup MMA: y[m][n] = alpha * g(n) * sum_k x[m][k] * w~[n][k].
// One CTA = 128 weight rows x BM tokens (BM = 128, or 256 when the wider tiles still give
// every SM a CTA), rastered in groups of 16 row tiles so the activations stay in L2; the k-loop
// is w4a16_wgmma.cuh's (weights dequantized into shared memory, asynchronous wgmma).
#include <cuda_bf16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/w4a16_kernels.h"
#include "ops/cuda/w4a16_wgmma.cuh"

namespace fp4moe::cuda {
namespace {

using wgmma::kBN;
using wgmma::kStrips;
using wgmma::Tile;
constexpr int kRasterGroup = 16;

template <int BM, bool NV>
__global__ void __launch_bounds__(wgmma::kThreads, 1) w4a16_prefill_wgmma_kernel(const W4Args a) {
  const int64_t row_tiles = (a.n + kBN - 1) / kBN, tok_tiles = (a.m + BM - 1) / BM;
  const int64_t bid = blockIdx.x;
  const int64_t per_group = kRasterGroup * tok_tiles;
  const int64_t first_row_tile = (bid / per_group) * kRasterGroup;
  const int64_t gsize = row_tiles - first_row_tile < kRasterGroup ? row_tiles - first_row_tile : kRasterGroup;
  const int64_t in_grp = bid % per_group;
  const int64_t row_tile = first_row_tile + in_grp % gsize;
  const int64_t tok0 = (in_grp / gsize) * BM;
  const int64_t strips = (a.n + kTileRows - 1) / kTileRows;
  const int64_t strip0 = row_tile * kStrips;

  const __nv_bfloat16* xrow[Tile<BM>::kXCopies];
#pragma unroll
  for (int i = 0; i < Tile<BM>::kXCopies; ++i) {
    const int64_t tok = tok0 + threadIdx.x / 8 + 32 * i;
    xrow[i] = tok < a.m ? a.x + tok * a.k + (threadIdx.x % 8) * 8 : nullptr;
  }
  constexpr int kSvec = (NV ? kNvScaleBytesPerTile : kMxScaleBytesPerTile) / 16;
  const int64_t ws = strip0 + threadIdx.x / 32, ss = strip0 + threadIdx.x / kSvec;
  float acc[BM / 2];
  wgmma::wgmma_mainloop<BM, NV>(xrow, ws < strips ? ws : -1, ss < strips ? ss : -1, a.codes, a.scales, a.ktiles, a.k,
                                a.x, acc);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q = lane % 4;
  const detail::RangeScales rs{a.range_begin, a.range_scale, a.num_ranges, a.alpha};
  const int64_t n0 = (strip0 + warp) * kTileRows + g, n1 = n0 + 8;
  const float f0 = n0 < a.n ? detail::row_factor(rs, n0) : 0.0f;
  const float f1 = n1 < a.n ? detail::row_factor(rs, n1) : 0.0f;
  // bf16 output with 16-byte aligned rows: through shared memory, whole row segments.
  if (!a.y_f32 && a.n % 8 == 0 && (reinterpret_cast<uintptr_t>(a.y) & 15) == 0) {
    uint8_t* tile = wgmma::smem_tile_base();
    __syncthreads();  // every warp is past its last read of the stages
    wgmma::stage_acc_bf16<BM>(acc, f0, f1, tile);
    __syncthreads();
    const int64_t col0 = strip0 * kTileRows;
    const int rows = static_cast<int>(a.m - tok0 < BM ? a.m - tok0 : BM);
    const int cols = static_cast<int>(a.n - col0 < kBN ? a.n - col0 : kBN);
    __nv_bfloat16* y = static_cast<__nv_bfloat16*>(a.y);
    wgmma::store_tile(tile, rows, cols, [&](int r) { return y + (tok0 + r) * a.n + col0; });
    return;
  }
#pragma unroll
  for (int t = 0; t < BM / 8; ++t)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int64_t tok = tok0 + t * 8 + 2 * q + e;
      if (tok >= a.m) continue;
      if (n0 < a.n) detail::store_out(a.y, a.y_f32, tok * a.n + n0, acc[4 * t + e] * f0);
      if (n1 < a.n) detail::store_out(a.y, a.y_f32, tok * a.n + n1, acc[4 * t + 2 + e] * f1);
    }
}

template <int BM, bool NV>
cudaError_t launch_wgmma(const W4Args& a, cudaStream_t s) {
  static bool attr_set = false;  // raised once per instantiation (before any graph capture)
  if (!attr_set) {
    const cudaError_t e = wgmma::raise_wgmma_smem<BM>(w4a16_prefill_wgmma_kernel<BM, NV>);
    if (e != cudaSuccess) return e;
    attr_set = true;
  }
  const int64_t blocks = ((a.n + kBN - 1) / kBN) * ((a.m + BM - 1) / BM);
  w4a16_prefill_wgmma_kernel<BM, NV><<<static_cast<unsigned>(blocks), wgmma::kThreads, Tile<BM>::kSmemBytes, s>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_w4a16_prefill_wgmma(const W4Args& a, cudaStream_t s) {
  if (a.m == 0) return cudaSuccess;
  // 256-token tiles when they still give every SM a CTA; 128 otherwise (small M).
  const int sms = device_sm_count();
  const int64_t ctas256 = ((a.n + kBN - 1) / kBN) * ((a.m + 255) / 256);
  if (a.m > 128 && ctas256 >= sms) return a.nvfp4 ? launch_wgmma<256, true>(a, s) : launch_wgmma<256, false>(a, s);
  return a.nvfp4 ? launch_wgmma<128, true>(a, s) : launch_wgmma<128, false>(a, s);
}

}  // namespace fp4moe::cuda
