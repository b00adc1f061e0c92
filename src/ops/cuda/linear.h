// The CUDA linear layer: FP4 weights (NVFP4 or MXFP4, repacked at load), bf16 activations,
// bf16 or fp32 output, fp32 accumulation, one global scale per output range applied in the
// epilogue (fused q_a|kv and gate|up stay exact). CPU references: fp4moe::cpu::linear and
// linear_w4a4 (ops/cpu/linear_ref.h).
//
// Everything here validates its inputs and throws with the op and the shapes in the
// message; the kernels below it (w4a16_kernels.h) take raw pointers and return a status.
// No call allocates or synchronizes, so a sequence of calls can be captured in a CUDA graph;
// global scales are read from device memory at run time (update them with set_global_scales).
// Make one eager call of each kernel kind before capturing (the prefill kernel raises its
// shared-memory limit on first use, which a capture does not record).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "formats/matrix.h"
#include "formats/quantize.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/w4a16_config.h"
#include "ops/cuda/w4a16_layout.h"

namespace fp4moe::cuda {

// A repacked FP4 weight on the device.
struct DeviceW4Matrix {
  MatrixFormat format = MatrixFormat::kNVFP4;
  int64_t rows = 0, cols = 0, ktiles = 0;
  int num_ranges = 0;
  DeviceBuffer codes, scales, range_begin, range_scale;
  int64_t stream_bytes = 0;  // codes + scales read per call

  static DeviceW4Matrix upload(const W4Layout& L, cudaStream_t s = nullptr);
  // Overwrites the global scales in device memory (e.g. between CUDA-graph replays).
  void set_global_scales(const std::vector<float>& g, cudaStream_t s = nullptr);
};

enum class OutType : uint8_t { kBF16, kF32 };

// Split-K scratch for the decode kernel; zeroed at allocation, left zeroed by every call.
struct Workspace {
  DeviceBuffer buf;
  static Workspace for_matrix(int64_t n, int64_t k, std::optional<W4Config> pinned = std::nullopt);
};

// y [m, w.rows] = alpha * (x [m, w.cols] . W^T) with the per-range global scales.
// alpha: optional device scalar (null = 1). config: pin a kernel (tests, benchmark).
void linear_w4a16(const __nv_bfloat16* x, int64_t m, const DeviceW4Matrix& w, void* y, OutType out,
                  const Workspace& ws, cudaStream_t s, std::optional<W4Config> config = std::nullopt,
                  const float* alpha = nullptr);

// W4A4 emulation: quantize x to NVFP4 with the device-resident global scale (static: *gs;
// dynamic: from amax), then the W4A16 path on the dequantized activations with alpha =
// dequant_scale. scratch: x_dq [m, k] bf16, packed [m, k/2], scales [m, k/16], 2 floats.
struct W4a4Scratch {
  DeviceBuffer x_dq, packed, scales, scalars;
  static W4a4Scratch for_shape(int64_t m, int64_t k);
};
void linear_w4a4(const __nv_bfloat16* x, int64_t m, const DeviceW4Matrix& w, bool dynamic, const float* gs,
                 void* y, OutType out, W4a4Scratch& scratch, const Workspace& ws, cudaStream_t s);

// Dequantized weights through the kernels' own path (see w4_dequantize.cu).
void dequantize_w4(const DeviceW4Matrix& w, void* out, bool out_f32, bool with_global, cudaStream_t s);

}  // namespace fp4moe::cuda
