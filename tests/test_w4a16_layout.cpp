// The CUDA kernels' weight layout (ops/cuda/w4a16_layout.h) and config heuristic
// (ops/cuda/w4a16_config.h) are host code: checked here, without a GPU.
//   - repack -> unrepack is the identity, bit for bit, for NVFP4 and MXFP4, odd shapes
//   - every bit of the code area belongs to one code, and the kernels' dequantization of a code
//     word gives each code's value times 2^-126 exactly, in the register the mma fragment wants
//   - the e4m3 -> e5m3 scale preprocessing is exact for every non-negative e4m3 code
//   - inputs the layout cannot hold exactly are rejected with the row and block; MXFP4 blocks of
//     +-0 codes take any non-NaN scale
//   - the heuristic's choices stay inside the closed list of instantiations
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "formats/quantize.h"
#include "ops/cpu/linear_ref.h"
#include "ops/cuda/w4a16_config.h"
#include "ops/cuda/w4a16_layout.h"
#include "util/test_util.h"

namespace fp4moe {
namespace {

using cuda::repack_w4;
using cuda::unrepack_w4;

void expect_same_matrix(const Matrix& a, const Matrix& b) {
  EXPECT_EQ(a.format, b.format);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  EXPECT_TRUE(a.data == b.data) << "codes differ";
  EXPECT_TRUE(a.scales == b.scales) << "scales differ";
  ASSERT_EQ(a.ranges.size(), b.ranges.size());
  for (size_t i = 0; i < a.ranges.size(); ++i) {
    EXPECT_EQ(a.ranges[i].row_begin, b.ranges[i].row_begin);
    EXPECT_EQ(f32_bits(a.ranges[i].global_scale), f32_bits(b.ranges[i].global_scale));
  }
}

TEST(W4Layout, RoundTripNvfp4OddShapes) {
  test::SeededRng r;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 16}, {37, 80}, {16, 64}, {130, 592}, {200, 1040}}) {
    const auto w = test::random_bf16(r.rng, rows * cols, 0.05f);
    const Matrix m = quantize_nvfp4_weight(w.data(), rows, cols);
    const cuda::W4Layout L = repack_w4(m.view());
    EXPECT_EQ(L.strips, (rows + 15) / 16);
    EXPECT_EQ(L.ktiles, (cols + 63) / 64);
    expect_same_matrix(unrepack_w4(L), m);
  }
}

TEST(W4Layout, RoundTripMxfp4OddShapes) {
  test::SeededRng r;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 32}, {37, 96}, {129, 608}}) {
    const auto w = test::random_bf16(r.rng, rows * cols, 0.05f);
    const Matrix m = quantize_mxfp4(w.data(), rows, cols);
    expect_same_matrix(unrepack_w4(repack_w4(m.view())), m);
  }
}

TEST(W4Layout, RoundTripFusedRangesKeepEachGlobalScale) {
  test::SeededRng r;
  const auto a = test::random_bf16(r.rng, 48 * 128, 0.02f), b = test::random_bf16(r.rng, 24 * 128, 3.0f);
  const Matrix ma = quantize_nvfp4_weight(a.data(), 48, 128), mb = quantize_nvfp4_weight(b.data(), 24, 128);
  const Matrix* parts[] = {&ma, &mb};
  const Matrix fused = concat_rows(parts);
  ASSERT_NE(fused.ranges[0].global_scale, fused.ranges[1].global_scale);
  expect_same_matrix(unrepack_w4(repack_w4(fused.view())), fused);
}

// Every bit of the code area is owned by exactly one element's code (or is padding).
TEST(W4Layout, CodeSlotsAreABijection) {
  cuda::W4Layout L;
  L.format = MatrixFormat::kNVFP4;
  L.rows = 32;
  L.cols = 128;
  L.strips = 2;
  L.ktiles = 2;
  std::vector<int> seen(static_cast<size_t>(L.strips * L.ktiles * cuda::kTileCodeBytes * 8), 0);
  for (int64_t n = 0; n < L.rows; ++n)
    for (int64_t k = 0; k < L.cols; ++k) {
      const cuda::CodeSlot s = cuda::w4_code_slot(L, n, k);
      ASSERT_EQ(s.word % 4, 0);
      for (int c = 0; c < 4; ++c) ++seen[static_cast<size_t>(s.word * 8 + cuda::w4_code_bit(s.reg, s.half, c))];
    }
  for (int c : seen) EXPECT_EQ(c, 1);
}

// The kernels' dequantization of a code word (w4_dequant_word, the same source on the GPU)
// against the element values: every register half equals e2m1(code) * 2^-126 exactly, for
// every code in every position (the 16 codes put in each of the 8 positions, the other 7 positions
// random), and the register and half of (row, k) are those w4_code_slot names.
TEST(W4Layout, DequantWordGivesEveryCodeTimes2PowMinus126) {
  test::SeededRng sr;
  std::uniform_int_distribution<int> nib(0, 15);
  const float two_m126 = std::ldexp(1.0f, -126);
  for (int reg = 0; reg < 4; ++reg)
    for (int half = 0; half < 2; ++half)
      for (int code = 0; code < 16; ++code)
        for (int trial = 0; trial < 8; ++trial) {
          uint8_t codes[4][2];
          std::vector<uint8_t> word(4, 0);
          for (int r = 0; r < 4; ++r)
            for (int h = 0; h < 2; ++h) {
              codes[r][h] = static_cast<uint8_t>(r == reg && h == half ? code : nib(sr.rng));
              cuda::w4_put_code(word, cuda::CodeSlot{0, r, h}, codes[r][h]);
            }
          uint32_t w = 0;
          std::memcpy(&w, word.data(), 4);
          uint32_t out[4];
          cuda::w4_dequant_word(w, out);
          for (int r = 0; r < 4; ++r)
            for (int h = 0; h < 2; ++h) {
              const uint16_t bits = static_cast<uint16_t>(out[r] >> (16 * h));
              const float want = e2m1_to_float(codes[r][h]) * two_m126;
              EXPECT_EQ(bf16_to_float(bits), want) << "register " << r << " half " << h << " code " << int(codes[r][h]);
              EXPECT_EQ(bits & 0x8000u, (codes[r][h] & 8u) ? 0x8000u : 0u) << "sign of code " << int(codes[r][h]);
              EXPECT_EQ(cuda::w4_get_code(word, cuda::CodeSlot{0, r, h}), codes[r][h]);
            }
        }
  // Registers of (row, k) in a tile: r0 = (g, 2q), r1 = (g+8, 2q), r2 = (g, 2q+8), r3 = (g+8, 2q+8).
  cuda::W4Layout L;
  L.rows = 16;
  L.cols = 64;
  L.strips = 1;
  L.ktiles = 1;
  for (int row = 0; row < 16; ++row)
    for (int k = 0; k < 64; ++k) {
      const cuda::CodeSlot s = cuda::w4_code_slot(L, row, k);
      const int g = row % 8, q = (k % 8) / 2;
      EXPECT_EQ(s.word, (4 * g + q) * 16 + (k / 16) * 4);
      EXPECT_EQ(s.reg, 2 * ((k % 16) / 8) + row / 8);
      EXPECT_EQ(s.half, k % 2);
    }
}

TEST(W4Layout, E5m3ScaleIsExactForEveryNonNegativeE4m3) {
  for (int c = 0; c < 0x7F; ++c) {  // 0x7F is NaN
    const uint8_t e5 = cuda::nvfp4_scale_to_e5m3(static_cast<uint8_t>(c));
    EXPECT_EQ(cuda::nvfp4_scale_from_e5m3(e5), c) << "e4m3 code " << c;
    if (c == 0) continue;
    // The value the kernel builds: bf16 bits (e5 << 4) + (181 << 7) == scale * 2^64.
    const float kernel = bf16_to_float(static_cast<uint16_t>((e5 << 4) + (181 << 7)));
    EXPECT_EQ(kernel, e4m3_to_float(static_cast<uint8_t>(c)) * 18446744073709551616.0f) << "e4m3 code " << c;
  }
}

// A constant FP4 matrix: every code byte code_byte, every block scale scale.
Matrix constant_fp4(MatrixFormat f, int64_t rows, int64_t cols, uint8_t code_byte, uint8_t scale) {
  const bool nv = f == MatrixFormat::kNVFP4;
  Matrix m;
  m.format = f;
  m.scale_kind = nv ? ScaleKind::kE4m3 : ScaleKind::kUe8m0;
  m.rows = rows;
  m.cols = cols;
  m.data.assign(static_cast<size_t>(rows * cols / 2), code_byte);
  m.scales.assign(static_cast<size_t>(rows * (cols / (nv ? kNvfp4Block : kMxfp4Block))), scale);
  return m;
}

TEST(W4Layout, ZeroScaleBlocksComeBackWithZeroCodes) {
  Matrix m = constant_fp4(MatrixFormat::kNVFP4, 16, 32, 0x77, 0x38);  // scales 1.0
  m.scales[5] = 0x00;             // row 2, block 1
  const Matrix back = unrepack_w4(repack_w4(m.view()));
  for (int64_t k = 16; k < 32; k += 2) EXPECT_EQ(back.data[static_cast<size_t>(2 * 16 + k / 2)], 0) << k;
  EXPECT_EQ(back.scales[5], 0);
  EXPECT_EQ(back.data[0], 0x77);
}

TEST(W4Layout, RejectsScalesTheKernelsCannotHoldExactly) {
  Matrix m = constant_fp4(MatrixFormat::kNVFP4, 3, 32, 0x11, 0x38);
  m.scales[3] = 0x7F;  // NaN
  try {
    repack_w4(m.view());
    FAIL() << "NaN scale accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("row 1 block 1"), std::string::npos) << e.what();
  }
  m.scales[3] = 0xB8;  // -1.0
  EXPECT_THROW(repack_w4(m.view()), std::invalid_argument);

  Matrix x = constant_fp4(MatrixFormat::kMXFP4, 2, 64, 0x22, 127);
  x.scales[1] = 200;  // 2^73
  EXPECT_THROW(repack_w4(x.view()), std::invalid_argument);
  x.scales[1] = cuda::kMxScaleMax;
  EXPECT_NO_THROW(repack_w4(x.view()));
  x.scales[1] = kUe8m0NaN;
  EXPECT_THROW(repack_w4(x.view()), std::invalid_argument);
}

// A block of +-0 codes is +-0 whatever its (non-NaN) scale: the OCP MX recipe gives an all-zero block
// the smallest ue8m0 code (2^-127), far outside what the kernels hold. Such blocks are taken,
// each value keeps its sign (codes 0x0 and 0x8), and the dequantized matrix is unchanged; a
// block with one nonzero code and the same scale is still refused.
TEST(W4Layout, Mxfp4ZeroBlocksTakeAnyScale) {
  Matrix x = constant_fp4(MatrixFormat::kMXFP4, 2, 128, 0x21, 127);
  const uint8_t codes[4] = {0, 1, 200, 254};
  for (int b = 0; b < 4; ++b) {  // row 1, block b: +-0 codes, scale code codes[b]
    x.scales[static_cast<size_t>(4 + b)] = codes[b];
    for (int i = 0; i < 16; ++i) x.data[static_cast<size_t>(64 + b * 16 + i)] = i % 3 == 0 ? 0x88 : i % 3 == 1 ? 0x08 : 0x00;
  }
  Matrix back;
  ASSERT_NO_THROW(back = unrepack_w4(repack_w4(x.view())));
  std::vector<float> want(2 * 128), got(2 * 128);
  cpu::dequantize(x.view(), want.data());
  cpu::dequantize(back.view(), got.data());
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_EQ(f32_bits(got[i]), f32_bits(want[i])) << "element " << i;  // -0 stays -0
  EXPECT_EQ(back.data, x.data);
  x.data[64 + 16 + 3] = 0x10;  // row 1, block 1 (scale 2^-126): one code 0.5
  try {
    repack_w4(x.view());
    FAIL() << "a nonzero block with scale 2^-126 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("row 1 block 1"), std::string::npos) << e.what();
  }
}

TEST(W4Config, HeuristicStaysInTheInstantiatedList) {
  for (int64_t m : {1, 2, 3, 7, 8, 9, 16, 17, 31, 33, 64, 65, 128, 4096})
    for (auto [n, k] : {std::pair<int64_t, int64_t>{1536, 4096}, {32768, 1024}, {4096, 8192}, {7168, 16384}, {200, 592}}) {
      const cuda::W4Config c = cuda::choose_w4_config(m, n, k, 132);
      if (m <= cuda::kDecodeMaxM) {
        EXPECT_EQ(c.kernel, cuda::W4Kernel::kDecode);
        EXPECT_TRUE(c.mtiles == 1 || c.mtiles == 2 || c.mtiles == 4 || c.mtiles == 8);
        EXPECT_GE(c.mtiles * 8, m);
        EXPECT_GE(c.splits, 1);
        EXPECT_LE(c.splits, 32);
        EXPECT_GE((k + 63) / 64 / c.splits, std::min<int64_t>(4, (k + 63) / 64)) << "each split keeps a chunk";
        EXPECT_LE(((n + 127) / 128) * c.splits, std::max<int64_t>((n + 127) / 128, 132 * cuda::decode_ctas_per_sm(c.mtiles)))
            << "one wave of CTAs";
      } else {
        EXPECT_EQ(c.kernel, cuda::W4Kernel::kPrefillWgmma);
      }
    }
  // Small-N shapes are split along k to cover the SMs; wide ones are not.
  EXPECT_GT(cuda::choose_w4_config(1, 1536, 4096, 132).splits, 1);
  EXPECT_EQ(cuda::choose_w4_config(1, 65536, 1536, 132).splits, 1);
  EXPECT_EQ(cuda::w4_workspace_bytes(65536, 1536, 132), 0);
}

}  // namespace
}  // namespace fp4moe
