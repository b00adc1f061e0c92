// CPU reference linear and dequantization (see linear_ref.h).
#include "ops/cpu/linear_ref.h"

#include <cstring>
#include <stdexcept>
#include <vector>

#include "formats/blocks.h"
#include "formats/codecs.h"

namespace fp4moe::cpu {

void dequantize_row_unscaled(const MatrixView& w, int64_t row, float* out) {
  const int64_t K = w.cols;
  switch (w.format) {
    case MatrixFormat::kBF16: {
      const uint8_t* p = w.data + row * K * 2;
      for (int64_t k = 0; k < K; ++k) {
        uint16_t h;
        std::memcpy(&h, p + k * 2, 2);
        out[k] = bf16_to_float(h);
      }
      return;
    }
    case MatrixFormat::kNVFP4:
    case MatrixFormat::kMXFP4: {
      const bool nv = w.format == MatrixFormat::kNVFP4;
      const int64_t block = nv ? kNvfp4Block : kMxfp4Block;
      const uint8_t* codes = w.data + row * K / 2;
      const uint8_t* scales = w.scales + row * (K / block);
      for (int64_t k = 0; k < K; ++k) {
        const uint8_t byte = codes[k / 2];
        const uint8_t c = (k % 2 == 0) ? e2m1_unpack_lo(byte) : e2m1_unpack_hi(byte);
        const uint8_t s = scales[k / block];
        out[k] = e2m1_to_float(c) * (nv ? e4m3_to_float(s) : ue8m0_to_float(s));
      }
      return;
    }
    case MatrixFormat::kFP8Block: {
      const int64_t bc = matrix_scale_cols(w.format, K);
      const int64_t brow = row / kFp8BlockRows;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t si = brow * bc + k / kFp8BlockCols;
        float s;
        if (w.scale_kind == ScaleKind::kF32) std::memcpy(&s, w.scales + si * 4, 4);
        else s = ue8m0_to_float(w.scales[si]);
        out[k] = e4m3_to_float(w.data[row * K + k]) * s;
      }
      return;
    }
  }
}

void dequantize(const MatrixView& w, float* out) {
  validate_matrix(w);
  for (int64_t n = 0; n < w.rows; ++n) {
    float* row = out + n * w.cols;
    dequantize_row_unscaled(w, n, row);
    const float g = matrix_row_global_scale(w, n);
    for (int64_t k = 0; k < w.cols; ++k) row[k] *= g;
  }
}

namespace {
// Shared body: y = factor * g(n) * dot(x_m, w~_n), one dequantized weight row at a time.
void linear_rows(const float* x, int64_t m, const MatrixView& w, float factor, float* y) {
  std::vector<float> wrow(static_cast<size_t>(w.cols));
  for (int64_t n = 0; n < w.rows; ++n) {
    dequantize_row_unscaled(w, n, wrow.data());
    const float g = factor * matrix_row_global_scale(w, n);
    for (int64_t i = 0; i < m; ++i) {
      const float* xr = x + i * w.cols;
      float acc = 0.0f;
      for (int64_t k = 0; k < w.cols; ++k) acc += xr[k] * wrow[static_cast<size_t>(k)];
      y[i * w.rows + n] = acc * g;
    }
  }
}
}  // namespace

void linear(const float* x, int64_t m, const MatrixView& w, float* y) {
  validate_matrix(w);
  if (m < 0) throw std::invalid_argument("linear: negative token count");
  if (m == 0) return;
  linear_rows(x, m, w, 1.0f, y);
}

void linear_w4a4(const float* x, int64_t m, const MatrixView& w, ActGlobalScale g, float* y) {
  validate_matrix(w);
  if (w.format != MatrixFormat::kNVFP4)
    throw std::invalid_argument(std::string("W4A4 emulation needs an NVFP4 weight, got ") + to_string(w.format));
  if (m <= 0) return;
  Nvfp4Activations a = quantize_nvfp4_activations(x, m, w.cols, g);
  a.global.dequant_scale = 1.0f;  // applied once, in the epilogue factor below
  const std::vector<float> xq = dequantize_nvfp4_activations(a);
  linear_rows(xq.data(), m, w, g.dequant_scale, y);
}

}  // namespace fp4moe::cpu
