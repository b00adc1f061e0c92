// NVFP4 activation quantization on the GPU, bit-identical to fp4moe::quantize_nvfp4_activations
// (both call nvfp4_act_quantize_block of formats/blocks.h), and the W4A4 emulation linear.
//
// The global scale lives in device memory, so a captured CUDA graph picks up new scales:
//   static:  *gs = 1/input_scale (written by the caller, see act_global_scale_static)
//   dynamic: gs = 2688/amax over the finite values of x, computed on the device
//            (nvfp4_dynamic_global_scale), with dequant_scale = 1/gs written back.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "formats/quantize.h"

namespace fp4moe::cuda {

struct ActQuantArgs {
  const __nv_bfloat16* x = nullptr;  // [m, k]
  int64_t m = 0, k = 0;              // k % 16 == 0
  bool dynamic = false;
  const float* gs = nullptr;         // static: device scalar
  unsigned* amax_bits = nullptr;     // dynamic: device scratch (one word)
  uint8_t* packed = nullptr;         // [m, k/2]
  uint8_t* scales = nullptr;         // e4m3 [m, k/16] or 128x4-swizzled (swizzled_128x4_bytes)
  ScaleLayout layout = ScaleLayout::kRowMajor;
  __nv_bfloat16* x_dq = nullptr;     // optional [m, k]: code * block scale (exact in bf16)
  float* dequant_scale = nullptr;    // optional device scalar: 1/gs
};

// Raw launcher (no validation).
cudaError_t launch_nvfp4_act_quant(const ActQuantArgs& a, cudaStream_t s);

// Validated entry point: throws std::invalid_argument naming the shapes (k not a multiple
// of 16, missing buffers) and std::runtime_error on a CUDA error.
void quantize_nvfp4_activations_cuda(const ActQuantArgs& a, cudaStream_t s);

}  // namespace fp4moe::cuda
