// Block quantizers (formats/blocks.h, formats/quantize.h) against independent references
// written here: a literal transcription of ModelOpt's NVFP4 arithmetic (searchsorted-style
// e2m1 cast, brute-force e4m3), the activation rule of formats.md, nearest-value searches for
// MXFP4 and FP8 blocks, and the swizzle described as a 3-D array. Deterministic outputs are
// compared bit for bit; quantize/dequantize errors against stated bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "formats/blocks.h"
#include "formats/codecs.h"
#include "formats/quantize.h"
#include "ops/cpu/linear_ref.h"
#include "util/test_util.h"

namespace fp4moe {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- independent references -------------------------------------------------------------
// Nearest e4m3 code to a non-negative finite value by search over all codes (ties: even code),
// saturating at 448.
uint8_t e4m3_nearest(float v) {
  if (v >= 448.0f) return 0x7E;
  int best = 0;
  double bd = kInf;
  for (int c = 0; c <= 0x7E; ++c) {
    const double d = std::fabs(static_cast<double>(e4m3_to_float(static_cast<uint8_t>(c))) - v);
    if (d < bd || (d == bd && c % 2 == 0)) bd = d, best = c;
  }
  return static_cast<uint8_t>(best);
}

// ModelOpt's _cast_fp4: ordinal = number of bounds strictly below |x|, plus one at the odd
// bounds 0.75, 1.75, 3.5; the sign from x < 0.
uint8_t modelopt_cast_fp4(float x) {
  const float bounds[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  const float a = std::fabs(x);
  int ord = 0;
  for (float b : bounds) ord += b < a;
  ord += (a == 0.75f || a == 1.75f || a == 3.5f);
  return static_cast<uint8_t>(((x < 0) ? 8 : 0) + ord);
}

struct RefNvfp4 {
  std::vector<uint8_t> codes;  // one per element, unpacked
  std::vector<uint8_t> scales;
  float ws2;
};

// ModelOpt NVFP4QTensor.quantize, dynamic path, with the CUDA division of amax by 2688.
RefNvfp4 modelopt_reference(const std::vector<float>& w) {
  RefNvfp4 r;
  float amax = 0;
  for (float v : w) amax = std::max(amax, std::fabs(v));
  r.ws2 = amax * (1.0f / 2688.0f);
  for (size_t b = 0; b < w.size() / 16; ++b) {
    float bamax = 0;
    for (int i = 0; i < 16; ++i) bamax = std::max(bamax, std::fabs(w[b * 16 + i]));
    float pbs = bamax / (6.0f * r.ws2);
    if (pbs == 0) pbs = 1.0f;
    pbs = std::max(pbs, 0.001953125f);
    const uint8_t s = e4m3_nearest(pbs);
    r.scales.push_back(s);
    const float d = e4m3_to_float(s) * r.ws2;
    for (int i = 0; i < 16; ++i) r.codes.push_back(modelopt_cast_fp4(w[b * 16 + i] / d));
  }
  return r;
}

uint8_t code_at(const std::vector<uint8_t>& packed, size_t i) {
  return i % 2 ? e2m1_unpack_hi(packed[i / 2]) : e2m1_unpack_lo(packed[i / 2]);
}

// Weights with the features that stress the rules: a wide dynamic range across blocks,
// all-zero blocks, tiny blocks whose scale clamps at 2^-9, and exact e2m1 midpoints.
std::vector<float> stress_weights(std::mt19937_64& rng, int64_t rows, int64_t cols) {
  std::vector<float> w = test::random_bf16(rng, rows * cols, 0.02f);
  std::uniform_real_distribution<float> u(-8, 2);
  for (int64_t b = 0; b < rows * cols / 16; ++b) {
    const int kind = static_cast<int>(b % 7);
    float* blk = w.data() + b * 16;
    if (kind == 1) std::fill(blk, blk + 16, 0.0f);
    if (kind == 2) for (int i = 0; i < 16; ++i) blk[i] *= 1e-6f;
    if (kind == 3) for (int i = 0; i < 16; ++i) blk[i] = round_to_bf16(blk[i] * std::pow(10.0f, u(rng)));
  }
  return w;
}

// ---- NVFP4 weights ----------------------------------------------------------------------
TEST(Nvfp4Weight, MatchesModelOptArithmeticBitForBit) {
  test::SeededRng r;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 16}, {7, 48}, {64, 256}, {33, 4096}}) {
    const std::vector<float> w = stress_weights(r.rng, rows, cols);
    const Matrix m = quantize_nvfp4_weight(w.data(), rows, cols);
    const RefNvfp4 ref = modelopt_reference(w);
    ASSERT_EQ(f32_bits(m.ranges.at(0).global_scale), f32_bits(ref.ws2));
    ASSERT_EQ(m.scales, ref.scales) << rows << "x" << cols;
    for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(code_at(m.data, i), ref.codes[i]) << "element " << i;
  }
}

TEST(Nvfp4Weight, GlobalScaleRoundingVariants) {
  // CUDA: amax * fp32(1/2688); IEEE: amax / 2688. They differ for some amax (here found by search).
  int differ = 0;
  for (float a = 1.0f; a < 2.0f; a = std::nextafter(a, 3.0f)) {
    const float c = nvfp4_weight_global_scale(a, {GlobalScaleRounding::kCudaReciprocal});
    const float d = nvfp4_weight_global_scale(a, {GlobalScaleRounding::kIeeeDivision});
    ASSERT_EQ(c, a * (1.0f / 2688.0f));
    ASSERT_EQ(d, static_cast<float>(static_cast<double>(a) / 2688.0));  // IEEE division is correctly rounded
    differ += c != d;
    if (differ > 10) break;
  }
  EXPECT_GT(differ, 0);
  EXPECT_EQ(nvfp4_weight_global_scale(0.0f), 1.0f);  // all-zero tensor: no NaN scales
}

TEST(Nvfp4Weight, AllZeroBlocksAndTensors) {
  std::vector<float> w(64, 0.0f);
  const Matrix zero = quantize_nvfp4_weight(w.data(), 2, 32);
  EXPECT_EQ(zero.ranges[0].global_scale, 1.0f);
  for (uint8_t s : zero.scales) EXPECT_EQ(s, 0x38);  // e4m3(1.0): ModelOpt's zero-block rule
  for (uint8_t c : zero.data) EXPECT_EQ(c, 0);
  w[40] = 0.5f;  // one non-zero block; the other three stay zero blocks
  const Matrix one = quantize_nvfp4_weight(w.data(), 2, 32);
  EXPECT_EQ(one.scales[0], 0x38);
  EXPECT_EQ(one.scales[2], 0x7E);  // the block holding the amax gets the top scale, 448
  EXPECT_EQ(code_at(one.data, 40), 7);
}

TEST(Nvfp4Weight, DequantizationErrorIsWithinHalfAStep) {
  test::SeededRng r;
  const int64_t rows = 16, cols = 512;
  const std::vector<float> w = stress_weights(r.rng, rows, cols);
  const Matrix m = quantize_nvfp4_weight(w.data(), rows, cols);
  const float ws2 = m.ranges[0].global_scale;
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float d = e4m3_to_float(m.scales[static_cast<size_t>(i / 16)]) * ws2;
    const double deq = static_cast<double>(e2m1_to_float(code_at(m.data, static_cast<size_t>(i)))) * d;
    const double x = w[static_cast<size_t>(i)] / static_cast<double>(d);
    // Inside the e2m1 range the error is at most half the widest gap (1.0 between 4 and 6);
    // beyond 6 (a block scale rounded down by e4m3) it is the clipped excess.
    const double bound = std::max(1.0, std::fabs(x) - 6.0) * d * (1 + 1e-6);
    ASSERT_LE(std::fabs(deq - w[static_cast<size_t>(i)]), bound) << "element " << i;
  }
}

TEST(Nvfp4Weight, RejectsBadInput) {
  std::vector<float> w(48, 1.0f);
  EXPECT_THROW(quantize_nvfp4_weight(w.data(), 2, 24), std::invalid_argument);  // 24 % 16 != 0
  w[3] = kNaN;
  EXPECT_THROW(quantize_nvfp4_weight(w.data(), 3, 16), std::invalid_argument);
  w[3] = kInf;
  EXPECT_THROW(quantize_nvfp4_weight(w.data(), 3, 16), std::invalid_argument);
}

// ---- NVFP4 activations ----------------------------------------------------------------------
// The rule of formats.md, with brute-force e4m3 and the ModelOpt e2m1 cast.
void act_reference(const float* x, float gs, uint8_t* codes16, uint8_t* scale) {
  float amax = 0;
  bool nan = false;
  for (int i = 0; i < 16; ++i) amax = std::max(amax, std::fabs(x[i])), nan |= std::isnan(x[i]);
  const float sv = (gs * amax) / 6.0f;
  *scale = nan ? 0x7F : e4m3_nearest(sv);
  const float sf = e4m3_to_float(*scale);
  for (int i = 0; i < 16; ++i) codes16[i] = (nan || sf == 0) ? 0 : modelopt_cast_fp4((x[i] * gs) / sf);
}

void expect_act_matches_reference(const std::vector<float>& x, int64_t rows, int64_t cols, ActGlobalScale g) {
  const Nvfp4Activations a = quantize_nvfp4_activations(x.data(), rows, cols, g);
  for (int64_t b = 0; b < rows * cols / 16; ++b) {
    uint8_t codes[16], s;
    act_reference(x.data() + b * 16, g.gs, codes, &s);
    ASSERT_EQ(a.scales[static_cast<size_t>(b)], s) << "block " << b;
    for (int i = 0; i < 16; ++i) ASSERT_EQ(code_at(a.packed, static_cast<size_t>(b * 16 + i)), codes[i]) << "block " << b;
  }
}

TEST(Nvfp4Activations, StaticAndDynamicMatchTheRuleBitForBit) {
  test::SeededRng r;
  const int64_t rows = 37, cols = 320;
  std::vector<float> x = test::random_bf16(r.rng, rows * cols, 3.0f);
  for (int64_t i = 0; i < rows * cols; i += 97) x[static_cast<size_t>(i)] *= 50.0f;  // outliers
  std::fill(x.begin() + 16, x.begin() + 32, 0.0f);                                    // a zero block
  expect_act_matches_reference(x, rows, cols, act_global_scale_dynamic(x.data(), rows * cols));
  expect_act_matches_reference(x, rows, cols, act_global_scale_static(0.02f));   // typical calibrated scale
  expect_act_matches_reference(x, rows, cols, act_global_scale_static(1e-6f));   // huge gs: saturation
  expect_act_matches_reference(x, rows, cols, act_global_scale_static(100.0f));  // tiny gs: zero scales
}

TEST(Nvfp4Activations, SpecialValuesHaveTheDocumentedResult) {
  std::vector<float> x(64, 1.0f);
  std::fill(x.begin(), x.begin() + 16, 0.0f);  // block 0: zeros
  x[20] = kNaN;                                // block 1: NaN
  x[40] = kInf;                                // block 2: +Inf
  x[41] = -2.0f;
  const ActGlobalScale g{1.0f, 1.0f};
  const Nvfp4Activations a = quantize_nvfp4_activations(x.data(), 1, 64, g);
  EXPECT_EQ(a.scales[0], 0x00);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(code_at(a.packed, i), 0);
  EXPECT_EQ(a.scales[1], 0x7F);  // NaN block: NaN scale, zero codes -> dequantizes to NaN
  for (int i = 16; i < 32; ++i) EXPECT_EQ(code_at(a.packed, i), 0);
  EXPECT_EQ(a.scales[2], 0x7E);  // Inf block: scale saturates to 448
  EXPECT_EQ(code_at(a.packed, 40), 7);
  EXPECT_EQ(code_at(a.packed, 41), 8);  // -2/448 rounds to -0
  const std::vector<float> d = dequantize_nvfp4_activations(a);
  EXPECT_TRUE(std::isnan(d[20]));
  EXPECT_EQ(d[40], 6.0f * 448.0f);
  EXPECT_EQ(test::count_non_finite(d.data() + 48, 16), 0);
}

TEST(Nvfp4Activations, StaticGlobalScaleRejectsBadInputScales) {
  for (float s : {0.0f, -1.0f, 1e-39f /* denormal */, kInf, kNaN})
    EXPECT_THROW(act_global_scale_static(s), std::invalid_argument) << s;
  const ActGlobalScale g = act_global_scale_static(0.25f);
  EXPECT_EQ(g.gs, 4.0f);
  EXPECT_EQ(g.dequant_scale, 0.25f);
}

TEST(Nvfp4Activations, DynamicGlobalScaleIgnoresNonFiniteAndZero) {
  const std::vector<float> x = {1.0f, -2.0f, kInf, kNaN};
  EXPECT_EQ(act_global_scale_dynamic(x.data(), 4).gs, 2688.0f / 2.0f);
  const std::vector<float> z(16, 0.0f);
  EXPECT_EQ(act_global_scale_dynamic(z.data(), 16).gs, 1.0f);
}

TEST(Nvfp4Activations, DequantizationErrorBound) {
  test::SeededRng r;
  const int64_t rows = 9, cols = 256;
  const std::vector<float> x = test::random_bf16(r.rng, rows * cols, 1.0f);
  const ActGlobalScale g = act_global_scale_dynamic(x.data(), rows * cols);
  const Nvfp4Activations a = quantize_nvfp4_activations(x.data(), rows, cols, g);
  const std::vector<float> d = dequantize_nvfp4_activations(a);
  for (int64_t b = 0; b < rows * cols / 16; ++b) {
    const float step = e4m3_to_float(a.scales[static_cast<size_t>(b)]) * g.dequant_scale;
    for (int i = 0; i < 16; ++i) {
      const size_t k = static_cast<size_t>(b * 16 + i);
      const double excess = std::max(0.0, std::fabs(x[k]) / step - 6.0);
      ASSERT_LE(std::fabs(d[k] - x[k]), std::max(1.0, excess) * step * (1 + 1e-6)) << k;
    }
  }
}

TEST(Nvfp4Activations, SwizzledLayoutHoldsTheSameScales) {
  test::SeededRng r;
  const int64_t rows = 130, cols = 96;  // 6 scale columns: both dimensions need padding
  const std::vector<float> x = test::random_bf16(r.rng, rows * cols, 1.0f);
  const ActGlobalScale g = act_global_scale_dynamic(x.data(), rows * cols);
  const Nvfp4Activations rm = quantize_nvfp4_activations(x.data(), rows, cols, g, ScaleLayout::kRowMajor);
  const Nvfp4Activations sw = quantize_nvfp4_activations(x.data(), rows, cols, g, ScaleLayout::kSwizzled128x4);
  EXPECT_EQ(rm.packed, sw.packed);
  EXPECT_EQ(sw.scales, swizzle_scales_128x4(rm.scales.data(), rows, cols / 16));
  EXPECT_EQ(dequantize_nvfp4_activations(rm), dequantize_nvfp4_activations(sw));
}

// ---- 128x4 swizzle ------------------------------------------------------------------------
TEST(Swizzle128x4, HandCheckedOffsets) {
  EXPECT_EQ(swizzle_128x4_offset(0, 0, 4), 0);
  EXPECT_EQ(swizzle_128x4_offset(0, 1, 4), 1);
  EXPECT_EQ(swizzle_128x4_offset(1, 0, 4), 16);
  EXPECT_EQ(swizzle_128x4_offset(32, 0, 4), 4);
  EXPECT_EQ(swizzle_128x4_offset(127, 3, 4), 31 * 16 + 3 * 4 + 3);
  EXPECT_EQ(swizzle_128x4_offset(0, 4, 8), 512);
  EXPECT_EQ(swizzle_128x4_offset(128, 0, 8), 2 * 512);
}

TEST(Swizzle128x4, MatchesTheTiledArrayDescriptionAndRoundTrips) {
  test::SeededRng r;
  for (auto [rows, scols] : {std::pair<int64_t, int64_t>{1, 1}, {128, 4}, {129, 5}, {300, 64}, {7, 256}}) {
    std::vector<uint8_t> s(static_cast<size_t>(rows * scols));
    for (uint8_t& v : s) v = static_cast<uint8_t>(1 + r.rng() % 255);  // never zero, so padding is visible
    const std::vector<uint8_t> sw = swizzle_scales_128x4(s.data(), rows, scols);
    const int64_t pr = (rows + 127) / 128 * 128, pc = (scols + 3) / 4 * 4;
    ASSERT_EQ(static_cast<int64_t>(sw.size()), pr * pc);
    // Independent description: tiles of 128 rows x 4 columns, tile-major with column tiles
    // fastest; inside a tile the 512 bytes are an array [32][4][4] indexed by
    // (row % 32, row / 32, column).
    for (int64_t m = 0; m < pr; ++m)
      for (int64_t k = 0; k < pc; ++k) {
        const int64_t tile = (m / 128) * (pc / 4) + k / 4;
        const int64_t mm = m % 128;
        const size_t off = static_cast<size_t>(tile * 512 + ((mm % 32) * 4 + mm / 32) * 4 + k % 4);
        const uint8_t want = (m < rows && k < scols) ? s[static_cast<size_t>(m * scols + k)] : 0;
        ASSERT_EQ(sw[off], want) << "m=" << m << " k=" << k;
      }
    EXPECT_EQ(unswizzle_scales_128x4(sw.data(), rows, scols), s);
  }
}

// ---- MXFP4 ----------------------------------------------------------------------------------
TEST(Mxfp4, ScaleIsSmallestPowerOfTwoAvoidingClippingAndCodesAreNearest) {
  test::SeededRng r;
  const int64_t rows = 11, cols = 256;
  std::vector<float> w = stress_weights(r.rng, rows, cols);
  const Matrix m = quantize_mxfp4(w.data(), rows, cols);
  ASSERT_EQ(m.scale_kind, ScaleKind::kUe8m0);
  for (int64_t b = 0; b < rows * cols / 32; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(w[static_cast<size_t>(b * 32 + i)]));
    const uint8_t s = m.scales[static_cast<size_t>(b)];
    const double sv = std::ldexp(1.0, s - 127);
    if (amax == 0) {
      EXPECT_EQ(s, 127);
    } else {
      ASSERT_GE(sv * 6, amax) << "block " << b;      // no clipping
      ASSERT_LT(sv * 3, amax) << "block " << b;      // and no smaller power of two would do
    }
    for (int i = 0; i < 32; ++i) {
      const size_t k = static_cast<size_t>(b * 32 + i);
      ASSERT_EQ(code_at(m.data, k), modelopt_cast_fp4(static_cast<float>(w[k] / sv))) << k;
    }
  }
}

TEST(Mxfp4, NaNBlockGetsNaNScaleAndRejectsBadShapes) {
  std::vector<float> w(64, 1.0f);
  w[33] = kNaN;
  const Matrix m = quantize_mxfp4(w.data(), 1, 64);
  EXPECT_EQ(m.scales[0], 125);  // amax 1: 1/6 rounds up to 2^-2
  EXPECT_EQ(m.scales[1], kUe8m0NaN);
  for (int i = 32; i < 64; ++i) EXPECT_EQ(code_at(m.data, i), 0);
  EXPECT_THROW(quantize_mxfp4(w.data(), 1, 48), std::invalid_argument);
}

// Weights whose MXFP4 value would not be a finite fp32 are refused, naming the element: an
// infinite one, and finite ones from 3.5 x 2^126 (~2.98e38) on, which round to code 4 x 2^126 =
// 2^128. Just below, 3.4 x 2^126 rounds to code 3 (1.5 x 2^127) and is kept.
TEST(Mxfp4, WeightsPastFp32AfterQuantizationAreRefused) {
  std::vector<float> w(64, 1.0f);
  auto expect_refused = [&](float v, const std::string& needle) {
    w[40] = v;
    try {
      (void)quantize_mxfp4(w.data(), 1, 64);
      ADD_FAILURE() << v << " was quantized";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_refused(std::numeric_limits<float>::infinity(), "infinite weight at element 40");
  expect_refused(std::ldexp(3.5f, 126), "at element 40 is too large: its MXFP4 value 4 x 2^126 overflows fp32");
  w[40] = std::ldexp(3.4f, 126);
  const Matrix m = quantize_mxfp4(w.data(), 1, 64);
  EXPECT_EQ(m.scales[1], 253);  // 2^126
  EXPECT_EQ(code_at(m.data, 40), 5);  // e2m1 3.0
  EXPECT_EQ(matrix_bad_value(m.view()), "");
}

// ---- FP8 128x128 blocks ---------------------------------------------------------------------
TEST(Fp8Block, BothScaleKindsRoundToNearestWithinTheBlockScale) {
  test::SeededRng r;
  const int64_t rows = 200, cols = 300;  // partial blocks in both dimensions
  std::vector<float> w = test::random_bf16(r.rng, rows * cols, 0.05f);
  for (int64_t c = 0; c < 128; ++c) w[static_cast<size_t>(c)] = 0;  // keep one row partially zero
  for (ScaleKind kind : {ScaleKind::kF32, ScaleKind::kUe8m0}) {
    const Matrix m = quantize_fp8_block(w.data(), rows, cols, kind);
    ASSERT_EQ(static_cast<int64_t>(m.scales.size()), 2 * 3 * (kind == ScaleKind::kF32 ? 4 : 1));
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t si = (i / 128) * 3 + j / 128;
        float s;
        if (kind == ScaleKind::kF32) std::memcpy(&s, m.scales.data() + si * 4, 4);
        else s = ue8m0_to_float(m.scales[static_cast<size_t>(si)]);
        const float v = w[static_cast<size_t>(i * cols + j)];
        const uint8_t code = m.data[static_cast<size_t>(i * cols + j)];
        const uint8_t want = (std::signbit(v) ? 0x80 : 0) | e4m3_nearest(std::fabs(v / s));
        ASSERT_EQ(code, want) << i << "," << j;
      }
  }
  EXPECT_THROW(quantize_fp8_block(w.data(), rows, cols, ScaleKind::kE4m3), std::invalid_argument);
}

// ---- fused projections and the compressed-tensors convention ----------------------------
TEST(ConcatRows, KeepsEachPartsGlobalScale) {
  test::SeededRng r;
  const std::vector<float> a = test::random_bf16(r.rng, 5 * 32, 0.01f), b = test::random_bf16(r.rng, 3 * 32, 1.0f);
  const Matrix ma = quantize_nvfp4_weight(a.data(), 5, 32), mb = quantize_nvfp4_weight(b.data(), 3, 32);
  const Matrix* parts[] = {&ma, &mb};
  const Matrix f = concat_rows(parts);
  ASSERT_EQ(f.rows, 8);
  ASSERT_EQ(f.ranges.size(), 2u);
  EXPECT_EQ(f.ranges[0].row_begin, 0);
  EXPECT_EQ(f.ranges[1].row_begin, 5);
  EXPECT_EQ(f.ranges[0].global_scale, ma.ranges[0].global_scale);
  EXPECT_EQ(f.ranges[1].global_scale, mb.ranges[0].global_scale);
  EXPECT_NE(f.ranges[0].global_scale, f.ranges[1].global_scale);
  EXPECT_EQ(matrix_row_global_scale(f.view(), 4), ma.ranges[0].global_scale);
  EXPECT_EQ(matrix_row_global_scale(f.view(), 5), mb.ranges[0].global_scale);
  const Matrix mx = quantize_mxfp4(a.data(), 5, 32);
  const Matrix* bad[] = {&ma, &mx};
  EXPECT_THROW(concat_rows(bad), std::invalid_argument);
}

TEST(CompressedTensors, ReciprocalGlobalScaleConvention) {
  test::SeededRng r;
  std::uniform_real_distribution<float> u(1e-4f, 10.0f);
  for (int i = 0; i < 10000; ++i) {
    const float amax = u(r.rng);
    const float ct = 2688.0f / amax;  // what llm-compressor stores
    const float ws2 = ct_global_scale_to_modelopt(ct);
    // One IEEE division: within half an ulp of the exact reciprocal.
    ASSERT_LE(std::fabs(static_cast<double>(ws2) - 1.0 / ct), 0.5 * (std::nextafter(ws2, kInf) - ws2)) << ct;
    ASSERT_EQ(modelopt_global_scale_to_ct(ws2), 1.0f / ws2);
  }
  for (float bad : {0.0f, -1.0f, kInf, kNaN, 1e-39f /* denormal */, 3.4e38f /* reciprocal denormal */})
    EXPECT_THROW(ct_global_scale_to_modelopt(bad), std::invalid_argument) << bad;
}

// matrix_bad_value: "" for matrices quantized from finite values; for each format the first value
// that would make outputs NaN or flip weights, at its [row, column] or [row, block] position
// (classify_block_scale, which it shares with the doctor, is checked by the doctor's tests too).
TEST(MatrixBadValue, FindsTheFirstNanOrNegativeScaleNanWeightOrOverflowOfEachFormat) {
  test::SeededRng r;
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> w(4 * 256);
  for (float& v : w) v = n(r.rng);
  Matrix nv = quantize_nvfp4_weight(w.data(), 4, 256), mx = quantize_mxfp4(w.data(), 4, 256);
  Matrix f8 = quantize_fp8_block(w.data(), 4, 256, ScaleKind::kF32), f8u = quantize_fp8_block(w.data(), 4, 256, ScaleKind::kUe8m0);
  Matrix bf = make_bf16_matrix(w.data(), 4, 256);
  for (const Matrix* m : {&nv, &mx, &f8, &f8u, &bf}) EXPECT_EQ(matrix_bad_value(m->view()), "") << to_string(m->format);
  const std::string nan = ": the outputs would be NaN", flip = ": the sign of its weights would flip";

  nv.scales[1 * 16 + 5] = 0x7F;  // row 1, block 5 (16 blocks per row)
  nv.scales[2 * 16] = 0xFF;      // a later one: the first is reported
  EXPECT_EQ(matrix_bad_value(nv.view()), "block scale [1, 5] is NaN (e4m3 0x7F)" + nan);
  nv.scales[1 * 16 + 5] = 0x80;  // -0: a zero scale
  EXPECT_EQ(matrix_bad_value(nv.view()), "block scale [2, 0] is NaN (e4m3 0xFF)" + nan);
  nv.scales[0 * 16 + 3] = 0xB8;  // -1
  EXPECT_EQ(matrix_bad_value(nv.view()), "block scale [0, 3] is negative (e4m3 0xB8)" + flip);
  mx.scales[3 * 8 + 7] = 0xFF;
  EXPECT_EQ(matrix_bad_value(mx.view()), "block scale [3, 7] is NaN (ue8m0 0xFF)" + nan);
  // Finite scales whose weights overflow fp32: block [3, 7] holds columns 224..255 of row 3.
  for (int c = 224; c < 256; c += 2) mx.data[static_cast<size_t>(3 * 128 + c / 2)] = 0x00;
  mx.data[static_cast<size_t>(3 * 128 + 229 / 2)] = 0x50;  // column 229: code 3.0 (high nibble)
  mx.scales[3 * 8 + 7] = 0xFD;                              // 2^126: 3 x 2^126 = 1.5 x 2^127 is finite
  EXPECT_EQ(matrix_bad_value(mx.view()), "");
  mx.scales[3 * 8 + 7] = 0xFE;  // 2^127: 3 x 2^127 is not
  const std::string inf_out = ": not a representable weight, the outputs would overflow";
  EXPECT_EQ(matrix_bad_value(mx.view()), "weight [3, 229] overflows fp32 (3 x block scale 1.70141e+38)" + inf_out);
  mx.data[static_cast<size_t>(3 * 128 + 229 / 2)] = 0x00;  // the same scale on a zero block is harmless
  EXPECT_EQ(matrix_bad_value(mx.view()), "");
  f8.data[2 * 256 + 9] = 0xFF;
  EXPECT_EQ(matrix_bad_value(f8.view()), "weight [2, 9] is NaN (e4m3 0xFF)" + nan);
  f8u.scales[1] = 0xFF;  // ue8m0 scales, one byte each: column block 1 of row block 0
  EXPECT_EQ(matrix_bad_value(f8u.view()), "block scale [0, 1] is NaN (ue8m0 0xFF)" + nan);
  Matrix f8s = quantize_fp8_block(w.data(), 4, 256, ScaleKind::kF32), f8n = f8s;
  const float inf = std::numeric_limits<float>::infinity(), neg = -0.5f;
  std::memcpy(f8s.scales.data() + 4, &inf, 4);
  EXPECT_EQ(matrix_bad_value(f8s.view()), "block scale [0, 1] is infinite" + nan);
  std::memcpy(f8n.scales.data(), &neg, 4);
  EXPECT_EQ(matrix_bad_value(f8n.view()), "block scale [0, 0] is negative" + flip);
  // NVFP4: the global scale multiplies every weight of its range; the largest (code 6 x e4m3
  // 448, where the quantizer put the amax) overflows from ~1.3e35 on.
  Matrix nvo = quantize_nvfp4_weight(w.data(), 4, 256);
  ASSERT_EQ(nvo.ranges.size(), 1u);
  nvo.ranges[0].global_scale = 1e30f;
  EXPECT_EQ(matrix_bad_value(nvo.view()), "");
  nvo.ranges[0].global_scale = 2e35f;
  // The reported weight is the first that the CPU dequantization (global scale applied) makes infinite.
  std::vector<float> deq(4 * 256);
  cpu::dequantize(nvo.view(), deq.data());
  const int64_t first = std::find_if(deq.begin(), deq.end(), [](float v) { return !std::isfinite(v); }) - deq.begin();
  ASSERT_LT(first, 4 * 256);
  const std::string nvmsg = matrix_bad_value(nvo.view());
  const std::string pos = "weight [" + std::to_string(first / 256) + ", " + std::to_string(first % 256) + "] overflows fp32 (";
  EXPECT_EQ(nvmsg.rfind(pos, 0), 0u) << nvmsg << " (wanted " << pos << ")";
  EXPECT_NE(nvmsg.find(" x global scale 2e+35)" + inf_out), std::string::npos) << nvmsg;
  Matrix f8o = quantize_fp8_block(w.data(), 4, 256, ScaleKind::kF32);
  const float huge = 1e36f;  // x 448 overflows fp32; the block's largest |weight| code decides
  std::memcpy(f8o.scales.data() + 4, &huge, 4);  // column block 1: columns 128..255
  for (int r = 0; r < 4; ++r)
    for (int c = 128; c < 256; ++c) f8o.data[static_cast<size_t>(r * 256 + c)] = 0x30;  // 0.5: 5e35, finite
  EXPECT_EQ(matrix_bad_value(f8o.view()), "");
  f8o.data[2 * 256 + 140] = 0xFE;  // -448
  EXPECT_EQ(matrix_bad_value(f8o.view()), "weight [2, 140] overflows fp32 (-448 x block scale 1e+36)" + inf_out);
  bf.data[2 * (3 * 256 + 200) + 1] = 0x7F, bf.data[2 * (3 * 256 + 200)] = 0x80;  // bf16 0x7F80 = +inf
  EXPECT_EQ(matrix_bad_value(bf.view()), "weight [3, 200] is not finite (bf16 0x7F80)" + nan);
}

}  // namespace
}  // namespace fp4moe
