// CPU reference for the linear layer and dequantization: plain loops, fp32 accumulation,
// written to be read and trusted rather than to be fast. Every CUDA linear kernel is tested
// against these functions.
//
//   y[m][n] = g(n) * sum_k x[m][k] * w~[n][k]
// where w~ is the dequantized weight WITHOUT its global scale (code * block scale, exact in
// fp32 for FP4) and g(n) the global scale of the output range holding row n. This is the
// order a Hopper W4A16 kernel uses (global scale in the epilogue), so fused projections with
// different global scales per part are exact.
#pragma once

#include <cstdint>

#include "formats/matrix.h"
#include "formats/quantize.h"

namespace fp4moe::cpu {

// Dequantizes a whole matrix to fp32 [rows, cols], global scales applied (per output range).
void dequantize(const MatrixView& w, float* out);
// One row, without its global scale.
void dequantize_row_unscaled(const MatrixView& w, int64_t row, float* out);

// y [m, w.rows] = x [m, w.cols] . W^T (validates w; m may be 0).
void linear(const float* x, int64_t m, const MatrixView& w, float* y);

// W4A4 emulation: quantize x to NVFP4 with global scale g (exactly as a Blackwell kernel
// would), dequantize it, then the linear: y = (g.dequant_scale * g(n)) * sum_k x~ w~.
// Requires an NVFP4 weight.
void linear_w4a4(const float* x, int64_t m, const MatrixView& w, ActGlobalScale g, float* y);

}  // namespace fp4moe::cpu
