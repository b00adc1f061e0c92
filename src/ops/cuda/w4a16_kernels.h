// Raw launchers of the W4A16 kernels: device pointers, sizes and a stream in, a CUDA status
// out. No validation here (linear.h does it once, above); the config is a W4Config from
// w4a16_config.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/w4a16_config.h"

namespace fp4moe::cuda {

struct W4Args {
  bool nvfp4 = true;          // else MXFP4
  const uint8_t* codes = nullptr;   // repacked, see w4a16_layout.h
  const uint8_t* scales = nullptr;
  int64_t ktiles = 0;         // ceil(K/64): tiles per strip
  const int32_t* range_begin = nullptr;  // device: first row of each output range
  const float* range_scale = nullptr;    // device: its global scale
  int num_ranges = 1;
  const float* alpha = nullptr;          // device scalar multiplying every output, or null
  const __nv_bfloat16* x = nullptr;      // [m, k] row-major
  void* y = nullptr;                     // [m, n] row-major, bf16 or fp32
  bool y_f32 = false;
  int64_t m = 0, n = 0, k = 0;
  void* workspace = nullptr;             // decode split-K (w4_decode_workspace_bytes), zeroed once
};

cudaError_t launch_w4a16_decode(const W4Args& a, const W4Config& c, cudaStream_t s);
cudaError_t launch_w4a16_prefill(const W4Args& a, cudaStream_t s);
cudaError_t launch_w4a16_prefill_wgmma(const W4Args& a, cudaStream_t s);

// The kernels' own dequantization, written out: W[n][k] = code * scale (* g(n) when
// with_global), [n, k] row-major, fp32 (out_f32) or bf16. Used by the exactness test and
// for the benchmark's cuBLAS baseline.
cudaError_t launch_w4_dequantize(const W4Args& a, void* out, bool out_f32, bool with_global, cudaStream_t s);

}  // namespace fp4moe::cuda
