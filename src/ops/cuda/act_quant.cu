// NVFP4 activation quantization kernels (see act_quant.h). One thread per 16-element block:
// the block is loaded with two 16-byte loads, converted to fp32 exactly and handed to the
// same nvfp4_act_quantize_block the CPU uses; IEEE division is kept (no fast-math), so the
// bytes match the CPU reference by construction.
#include "ops/cuda/act_quant.h"

#include <string>

#include "formats/blocks.h"
#include "ops/cuda/cuda_check.h"

namespace fp4moe::cuda {
namespace {

__device__ __forceinline__ float bf16_bits_to_float(uint32_t w, int half) {
  return __uint_as_float(half ? (w & 0xFFFF0000u) : (w << 16));
}

// amax over the finite values; non-negative floats order like their bit patterns, so an
// integer atomicMax is exact and order-independent.
__global__ void act_amax_kernel(const __nv_bfloat16* x, int64_t count, unsigned* amax_bits) {
  float m = 0.0f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = fabsf(__bfloat162float(x[i]));
    if (isfinite(v)) m = fmaxf(m, v);
  }
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, o));
  if (threadIdx.x % 32 == 0 && m > 0.0f) atomicMax(amax_bits, __float_as_uint(m));
}

__global__ void act_quant_kernel(const ActQuantArgs a) {
  const int64_t scols = a.k / kNvfp4Block;
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const float gs = a.dynamic ? nvfp4_dynamic_global_scale(__uint_as_float(*a.amax_bits)) : *a.gs;
  if (b == 0 && a.dequant_scale) *a.dequant_scale = 1.0f / gs;
  if (b >= a.m * scols) return;
  const int64_t row = b / scols, col = b % scols;
  const uint4* src = reinterpret_cast<const uint4*>(a.x + b * kNvfp4Block);
  const uint4 v0 = src[0], v1 = src[1];
  const uint32_t w[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
  float xf[kNvfp4Block];
#pragma unroll
  for (int i = 0; i < 8; ++i) xf[2 * i] = bf16_bits_to_float(w[i], 0), xf[2 * i + 1] = bf16_bits_to_float(w[i], 1);
  uint8_t packed[kNvfp4Block / 2];
  const uint8_t s = nvfp4_act_quantize_block(xf, gs, packed);
  uint2 pk;
  pk.x = packed[0] | packed[1] << 8 | packed[2] << 16 | static_cast<uint32_t>(packed[3]) << 24;
  pk.y = packed[4] | packed[5] << 8 | packed[6] << 16 | static_cast<uint32_t>(packed[7]) << 24;
  reinterpret_cast<uint2*>(a.packed)[b] = pk;
  if (a.layout == ScaleLayout::kRowMajor) a.scales[b] = s;
  else a.scales[swizzle_128x4_offset(row, col, swizzle_128x4_padded_cols(scols))] = s;
  if (a.x_dq) {
    const float sf = e4m3_to_float(s);
    uint32_t o[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float lo = e2m1_to_float(e2m1_unpack_lo(packed[i])) * sf;  // exact in bf16
      const float hi = e2m1_to_float(e2m1_unpack_hi(packed[i])) * sf;
      o[i] = (f32_bits(lo) >> 16) | (f32_bits(hi) & 0xFFFF0000u);
    }
    uint4* dst = reinterpret_cast<uint4*>(a.x_dq + b * kNvfp4Block);
    dst[0] = make_uint4(o[0], o[1], o[2], o[3]);
    dst[1] = make_uint4(o[4], o[5], o[6], o[7]);
  }
}

}  // namespace

cudaError_t launch_nvfp4_act_quant(const ActQuantArgs& a, cudaStream_t s) {
  if (a.m == 0) return cudaSuccess;
  cudaError_t e;
  if (a.layout == ScaleLayout::kSwizzled128x4) {
    // Padding bytes of the swizzled layout are zero (a memset is graph-capturable).
    e = cudaMemsetAsync(a.scales, 0, static_cast<size_t>(swizzled_128x4_bytes(a.m, a.k / kNvfp4Block)), s);
    if (e != cudaSuccess) return e;
  }
  if (a.dynamic) {
    e = cudaMemsetAsync(a.amax_bits, 0, sizeof(unsigned), s);
    if (e != cudaSuccess) return e;
    const int64_t count = a.m * a.k;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((count + 255) / 256, 1024));
    act_amax_kernel<<<blocks, 256, 0, s>>>(a.x, count, a.amax_bits);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  const int64_t nblocks = a.m * (a.k / kNvfp4Block);
  act_quant_kernel<<<static_cast<unsigned>((nblocks + 255) / 256), 256, 0, s>>>(a);
  return cudaGetLastError();
}

void quantize_nvfp4_activations_cuda(const ActQuantArgs& a, cudaStream_t s) {
  const std::string what = "quantize_nvfp4_activations_cuda: activations " + shape_str({a.m, a.k});
  if (a.m < 0 || a.k < 0) throw std::invalid_argument(what + ": negative shape");
  if (a.k % kNvfp4Block != 0) throw std::invalid_argument(what + ": k is not a multiple of the NVFP4 block (16)");
  if (a.m == 0) return;
  if (!a.x || !a.packed || !a.scales) throw std::invalid_argument(what + ": missing x, packed or scales buffer");
  if (a.dynamic ? !a.amax_bits : !a.gs) throw std::invalid_argument(what + ": missing the global-scale buffer");
  if (a.m * (a.k / kNvfp4Block) > 0xFFFFFFFFll * 256) throw std::invalid_argument(what + ": too large");
  check_cuda(launch_nvfp4_act_quant(a, s), what);
}

}  // namespace fp4moe::cuda
