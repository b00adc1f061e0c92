// Dequantization of a repacked FP4 weight through the very fragment path the GEMM kernels
// use (a_fragment in w4a16_common.cuh), written back to a row-major matrix. Its output is
// compared bit for bit with the CPU's dequantization, which pins down the layout, the
// scale preprocessing and the bf16 arithmetic of the kernels in one test.
#include <cuda_bf16.h>

#include "ops/cuda/w4a16_common.cuh"
#include "ops/cuda/w4a16_kernels.h"

namespace fp4moe::cuda {
namespace {

template <bool NV>
__global__ void w4_dequantize_kernel(const W4Args a, void* out, bool out_f32, bool with_global) {
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int64_t strips = (a.n + kTileRows - 1) / kTileRows;
  if (tile >= strips * a.ktiles) return;
  const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int64_t strip = tile / a.ktiles, kt = tile % a.ktiles;
  const uint4 c = reinterpret_cast<const uint4*>(a.codes + tile * kTileCodeBytes)[lane];
  uint2 s;
  if constexpr (NV) s = reinterpret_cast<const uint2*>(a.scales + tile * kNvScaleBytesPerTile)[g];
  else s = make_uint2(reinterpret_cast<const uint32_t*>(a.scales + tile * kMxScaleBytesPerTile)[g], 0u);
  const detail::RangeScales rs{a.range_begin, a.range_scale, a.num_ranges, nullptr};
  for (int j = 0; j < 4; ++j) {
    uint32_t af[4];
    detail::a_fragment<NV>(c, s, j, af);
    for (int r = 0; r < 4; ++r) {
      const int64_t n = strip * kTileRows + g + (r & 1) * 8;
      const int64_t k0 = kt * kTileK + j * 16 + 2 * q + (r >> 1) * 8;
      if (n >= a.n || k0 >= a.k) continue;
      const float f = with_global ? detail::row_factor(rs, n) : kEpilogueUnscale;
      for (int e = 0; e < 2; ++e) {
        const uint16_t h = static_cast<uint16_t>(af[r] >> (16 * e));
        const float v = __uint_as_float(static_cast<uint32_t>(h) << 16) * f;
        detail::store_out(out, out_f32, n * a.k + k0 + e, v);
      }
    }
  }
}

}  // namespace

cudaError_t launch_w4_dequantize(const W4Args& a, void* out, bool out_f32, bool with_global, cudaStream_t s) {
  const int64_t tiles = ((a.n + kTileRows - 1) / kTileRows) * a.ktiles;
  if (tiles == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((tiles + 7) / 8);
  if (a.nvfp4) w4_dequantize_kernel<true><<<blocks, 256, 0, s>>>(a, out, out_f32, with_global);
  else w4_dequantize_kernel<false><<<blocks, 256, 0, s>>>(a, out, out_f32, with_global);
  return cudaGetLastError();
}

}  // namespace fp4moe::cuda
