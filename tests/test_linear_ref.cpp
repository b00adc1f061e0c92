// The CPU reference linear (ops/cpu/linear_ref.h) against an fp64 computation over weights
// dequantized here from the format definitions, for every weight format; fused projections
// whose parts carry different global scales; the W4A4 emulation; and bad input.
// Metric: relative L2 error ||y - y64|| / ||y64|| <= 1e-5 (fp32 accumulation over K <= 4096);
// dequantization bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "formats/codecs.h"
#include "formats/quantize.h"
#include "ops/cpu/linear_ref.h"
#include "util/test_util.h"

namespace fp4moe {
namespace {

constexpr double kTol = 1e-5;

// Dequantized weight in fp64, global scales included, decoded from the format definitions.
std::vector<double> dequant64(const Matrix& m) {
  std::vector<double> w(static_cast<size_t>(m.rows * m.cols));
  const double e2m1[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  auto e4m3 = [](uint8_t c) {
    const int e = (c >> 3) & 15, mm = c & 7;
    const double mag = e == 0 ? std::ldexp(mm / 8.0, -6) : std::ldexp(1 + mm / 8.0, e - 7);
    return (c & 0x80) ? -mag : mag;
  };
  for (int64_t n = 0; n < m.rows; ++n) {
    double g = 1;
    for (const OutputRange& r : m.ranges)
      if (r.row_begin <= n) g = r.global_scale;
    for (int64_t k = 0; k < m.cols; ++k) {
      const int64_t i = n * m.cols + k;
      double v = 0;
      switch (m.format) {
        case MatrixFormat::kBF16: {
          uint16_t h;
          std::memcpy(&h, m.data.data() + i * 2, 2);
          uint32_t u = static_cast<uint32_t>(h) << 16;
          float f;
          std::memcpy(&f, &u, 4);
          v = f;
          break;
        }
        case MatrixFormat::kNVFP4:
        case MatrixFormat::kMXFP4: {
          const uint8_t byte = m.data[static_cast<size_t>(i / 2)];
          const uint8_t c = (i % 2) ? byte >> 4 : byte & 15;
          const double q = (c & 8) ? -e2m1[c & 7] : e2m1[c & 7];
          const bool nv = m.format == MatrixFormat::kNVFP4;
          const uint8_t s = m.scales[static_cast<size_t>(n * (m.cols / (nv ? 16 : 32)) + k / (nv ? 16 : 32))];
          v = q * (nv ? e4m3(s) : std::ldexp(1.0, s - 127));
          break;
        }
        case MatrixFormat::kFP8Block: {
          const int64_t si = (n / 128) * ((m.cols + 127) / 128) + k / 128;
          double s;
          if (m.scale_kind == ScaleKind::kF32) {
            float f;
            std::memcpy(&f, m.scales.data() + si * 4, 4);
            s = f;
          } else {
            s = std::ldexp(1.0, m.scales[static_cast<size_t>(si)] - 127);
          }
          v = e4m3(m.data[static_cast<size_t>(i)]) * s;
          break;
        }
      }
      w[static_cast<size_t>(i)] = v * g;
    }
  }
  return w;
}

std::vector<double> linear64(const std::vector<float>& x, int64_t M, const std::vector<double>& w, int64_t N, int64_t K) {
  std::vector<double> y(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[static_cast<size_t>(m * K + k)]) * w[static_cast<size_t>(n * K + k)];
      y[static_cast<size_t>(m * N + n)] = acc;
    }
  return y;
}

Matrix make(MatrixFormat f, ScaleKind s, const std::vector<float>& w, int64_t rows, int64_t cols) {
  switch (f) {
    case MatrixFormat::kBF16: return make_bf16_matrix(w.data(), rows, cols);
    case MatrixFormat::kNVFP4: return quantize_nvfp4_weight(w.data(), rows, cols);
    case MatrixFormat::kMXFP4: return quantize_mxfp4(w.data(), rows, cols);
    case MatrixFormat::kFP8Block: return quantize_fp8_block(w.data(), rows, cols, s);
  }
  throw std::logic_error("format");
}

struct FormatCase {
  MatrixFormat format;
  ScaleKind scales;
};
const FormatCase kFormats[] = {{MatrixFormat::kBF16, ScaleKind::kNone},
                               {MatrixFormat::kNVFP4, ScaleKind::kE4m3},
                               {MatrixFormat::kMXFP4, ScaleKind::kUe8m0},
                               {MatrixFormat::kFP8Block, ScaleKind::kF32},
                               {MatrixFormat::kFP8Block, ScaleKind::kUe8m0}};

TEST(LinearRef, EveryFormatMatchesFp64) {
  test::SeededRng r;
  const struct { int64_t M, N, K; } shapes[] = {{1, 40, 64}, {3, 130, 256}, {17, 257, 96}, {2, 24, 4096}};
  for (const FormatCase& fc : kFormats)
    for (const auto& s : shapes) {
      SCOPED_TRACE(std::string(to_string(fc.format)) + "/" + to_string(fc.scales) + " M=" + std::to_string(s.M) +
                   " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K));
      const std::vector<float> w = test::random_bf16(r.rng, s.N * s.K, 0.05f);
      const std::vector<float> x = test::random_bf16(r.rng, s.M * s.K, 1.0f);
      const Matrix m = make(fc.format, fc.scales, w, s.N, s.K);
      std::vector<float> y(static_cast<size_t>(s.M * s.N), std::nanf(""));
      cpu::linear(x.data(), s.M, m.view(), y.data());
      const std::vector<double> y64 = linear64(x, s.M, dequant64(m), s.N, s.K);
      EXPECT_LE(test::rel_l2(y.data(), y64.data(), s.M * s.N), kTol);
    }
}

TEST(LinearRef, DequantizeIsExactBitForBit) {
  test::SeededRng r;
  for (const FormatCase& fc : kFormats) {
    const int64_t N = 150, K = 256;
    const std::vector<float> w = test::random_bf16(r.rng, N * K, 0.05f);
    const Matrix m = make(fc.format, fc.scales, w, N, K);
    std::vector<float> d(static_cast<size_t>(N * K));
    cpu::dequantize(m.view(), d.data());
    const std::vector<double> d64 = dequant64(m);
    for (size_t i = 0; i < d.size(); ++i)
      ASSERT_EQ(d[i], static_cast<float>(d64[i])) << to_string(fc.format) << " element " << i;
  }
}

// gate|up style fused projection: the parts differ in magnitude by 40x, so their NVFP4
// global scales differ; each part must be computed with its own.
TEST(LinearRef, FusedProjectionKeepsEachPartsGlobalScale) {
  test::SeededRng r;
  const int64_t M = 5, I = 48, K = 512;
  const std::vector<float> wg = test::random_bf16(r.rng, I * K, 0.005f), wu = test::random_bf16(r.rng, I * K, 0.2f);
  const std::vector<float> x = test::random_bf16(r.rng, M * K, 1.0f);
  for (MatrixFormat f : {MatrixFormat::kNVFP4, MatrixFormat::kMXFP4}) {
    const Matrix g = make(f, ScaleKind::kNone, wg, I, K), u = make(f, ScaleKind::kNone, wu, I, K);
    const Matrix* parts[] = {&g, &u};
    const Matrix fused = concat_rows(parts);
    std::vector<float> yf(static_cast<size_t>(M * 2 * I)), yg(static_cast<size_t>(M * I)), yu(yg.size());
    cpu::linear(x.data(), M, fused.view(), yf.data());
    cpu::linear(x.data(), M, g.view(), yg.data());
    cpu::linear(x.data(), M, u.view(), yu.data());
    for (int64_t m = 0; m < M; ++m)
      for (int64_t i = 0; i < I; ++i) {
        ASSERT_EQ(yf[static_cast<size_t>(m * 2 * I + i)], yg[static_cast<size_t>(m * I + i)]);
        ASSERT_EQ(yf[static_cast<size_t>(m * 2 * I + I + i)], yu[static_cast<size_t>(m * I + i)]);
      }
    const std::vector<double> y64 = linear64(x, M, dequant64(fused), 2 * I, K);
    EXPECT_LE(test::rel_l2(yf.data(), y64.data(), M * 2 * I), kTol);
    if (f == MatrixFormat::kNVFP4) {
      // The bug class this guards against: one shared global scale for both parts.
      Matrix shared = fused;
      shared.ranges = {OutputRange{0, fused.ranges[0].global_scale}};
      std::vector<float> ys(yf.size());
      cpu::linear(x.data(), M, shared.view(), ys.data());
      EXPECT_GT(test::rel_l2(ys.data(), y64.data(), M * 2 * I), 0.5);
    }
  }
}

TEST(LinearRef, W4A4EmulationMatchesFp64OverQuantizedActivations) {
  test::SeededRng r;
  const int64_t M = 7, N = 72, K = 320;
  const std::vector<float> w = test::random_bf16(r.rng, N * K, 0.05f), x = test::random_bf16(r.rng, M * K, 2.0f);
  const Matrix m = quantize_nvfp4_weight(w.data(), N, K);
  for (ActGlobalScale g : {act_global_scale_dynamic(x.data(), M * K), act_global_scale_static(0.004f)}) {
    std::vector<float> y(static_cast<size_t>(M * N));
    cpu::linear_w4a4(x.data(), M, m.view(), g, y.data());
    const std::vector<float> xq = dequantize_nvfp4_activations(quantize_nvfp4_activations(x.data(), M, K, g));
    const std::vector<double> y64 = linear64(xq, M, dequant64(m), N, K);
    EXPECT_LE(test::rel_l2(y.data(), y64.data(), M * N), kTol);
    // And it is a quantized approximation of the unquantized product, not something else:
    // FP4 on both sides of a random product lands around 10-20% relative error.
    std::vector<double> wd(w.begin(), w.end());
    const std::vector<double> exact = linear64(x, M, wd, N, K);
    const double err = test::rel_l2(y.data(), exact.data(), M * N);
    EXPECT_GT(err, 0.01);
    EXPECT_LT(err, 0.35);
  }
}

TEST(LinearRef, ZeroTokensAndBadInput) {
  std::vector<float> w(32 * 64, 0.5f), x(64, 1.0f), y(32, 7.0f);
  const Matrix m = quantize_nvfp4_weight(w.data(), 32, 64);
  cpu::linear(x.data(), 0, m.view(), y.data());
  for (float v : y) EXPECT_EQ(v, 7.0f);  // M = 0 writes nothing
  MatrixView bad = m.view();
  bad.cols = 40;  // not a multiple of 16
  EXPECT_THROW(cpu::linear(x.data(), 1, bad, y.data()), std::invalid_argument);
  bad = m.view();
  bad.num_ranges = 0;
  EXPECT_THROW(cpu::linear(x.data(), 1, bad, y.data()), std::invalid_argument);
  const Matrix mx = quantize_mxfp4(w.data(), 32, 64);
  EXPECT_THROW(cpu::linear_w4a4(x.data(), 1, mx.view(), ActGlobalScale{}, y.data()), std::invalid_argument);
  EXPECT_THROW(cpu::linear(x.data(), -1, m.view(), y.data()), std::invalid_argument);
}

}  // namespace
}  // namespace fp4moe
