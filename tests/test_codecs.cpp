// Scalar codecs (formats/codecs.h) against independent references written here from the
// format definitions: e4m3 and e2m1 values from sign/exponent/mantissa formulas in fp64,
// encoders as brute-force nearest-value searches with ties to the even code. Every code both
// ways, every rounding tie, saturation, special values, and pack/unpack.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "formats/codecs.h"
#include "util/test_util.h"

namespace fp4moe {
namespace {

// ---- independent references -------------------------------------------------------------
double e4m3_ref_value(int code) {  // NaN for S.1111.111
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

double e2m1_ref_value(int code) {
  static const double kMag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  return (code & 8) ? -kMag[code & 7] : kMag[code & 7];
}

// Nearest non-negative code by brute force, ties to the even code (mantissa LSB 0).
int nearest_code(double a, int ncodes, double (*value)(int), int max_code) {
  int best = 0;
  double bd = std::numeric_limits<double>::infinity();
  for (int c = 0; c <= max_code && c < ncodes; ++c) {
    const double d = std::fabs(value(c) - a);
    if (d < bd || (d == bd && (c & 1) == 0)) {
      bd = d;
      best = c;
    }
  }
  return best;
}

uint8_t e4m3_ref_encode(float x) {
  if (std::isnan(x)) return std::signbit(x) ? 0xFF : 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 448) return sign | 0x7E;
  return sign | static_cast<uint8_t>(nearest_code(a, 256, e4m3_ref_value, 0x7E));
}

uint8_t e2m1_ref_encode(float x) {
  if (std::isnan(x)) return 0;
  const uint8_t sign = x < 0 ? 8 : 0;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 6) return sign | 7;
  return sign | static_cast<uint8_t>(nearest_code(a, 8, e2m1_ref_value, 7));
}

bool same_bits(float a, float b) { return f32_bits(a) == f32_bits(b); }

// Log-uniform magnitudes with random signs over [lo, hi].
std::vector<float> random_magnitudes(std::mt19937_64& rng, int n, double lo, double hi) {
  std::uniform_real_distribution<double> u(std::log(lo), std::log(hi));
  std::bernoulli_distribution neg(0.5);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(std::exp(u(rng)) * (neg(rng) ? -1 : 1));
  return v;
}

// ---- e4m3 -----------------------------------------------------------------------------------
TEST(E4m3, DecodesEveryCode) {
  for (int c = 0; c < 256; ++c) {
    const double ref = e4m3_ref_value(c);
    const float got = e4m3_to_float(static_cast<uint8_t>(c));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(got)) << "code " << c;
      EXPECT_TRUE(e4m3_is_nan(static_cast<uint8_t>(c)));
    } else {
      EXPECT_EQ(static_cast<double>(got), ref) << "code " << c;
      EXPECT_EQ(std::signbit(got), (c & 0x80) != 0) << "code " << c;
      EXPECT_FALSE(e4m3_is_nan(static_cast<uint8_t>(c)));
    }
  }
  EXPECT_EQ(e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), 0.001953125f);  // 2^-9
  EXPECT_EQ(e4m3_to_float(0x08), 0.015625f);     // 2^-6
}

TEST(E4m3, EncodesEveryFiniteValueBackToItsCode) {
  for (int c = 0; c < 256; ++c) {
    if (e4m3_is_nan(static_cast<uint8_t>(c))) continue;
    EXPECT_EQ(e4m3_from_float_sat(e4m3_to_float(static_cast<uint8_t>(c))), c) << "code " << c;
  }
}

TEST(E4m3, EveryTieRoundsToEvenAndNeighboursRoundToNearest) {
  for (int c = 0; c < 0x7E; ++c) {
    const float lo = e4m3_to_float(static_cast<uint8_t>(c)), hi = e4m3_to_float(static_cast<uint8_t>(c + 1));
    const float mid = static_cast<float>((static_cast<double>(lo) + hi) / 2);  // exact in fp32
    ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(lo) + hi) / 2);
    const int even = (c % 2 == 0) ? c : c + 1;
    for (float sgn : {1.0f, -1.0f}) {
      const uint8_t sbit = sgn < 0 ? 0x80 : 0;
      EXPECT_EQ(e4m3_from_float_sat(sgn * mid), sbit | even) << "tie " << mid;
      EXPECT_EQ(e4m3_from_float_sat(sgn * std::nextafter(mid, 0.0f)), sbit | c) << "below tie " << mid;
      EXPECT_EQ(e4m3_from_float_sat(sgn * std::nextafter(mid, 1e9f)), sbit | (c + 1)) << "above tie " << mid;
    }
  }
}

TEST(E4m3, SaturatesAt448AndKeepsNaN) {
  const float big[] = {448.0f, 448.5f, 463.9f, 464.0f, 480.0f, 1e6f, 3.4e38f, std::numeric_limits<float>::infinity()};
  for (float v : big) {
    EXPECT_EQ(e4m3_from_float_sat(v), 0x7E) << v;
    EXPECT_EQ(e4m3_from_float_sat(-v), 0xFE) << -v;
  }
  EXPECT_EQ(e4m3_from_float_sat(std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(e4m3_from_float_sat(-std::numeric_limits<float>::quiet_NaN()), 0xFF);
  EXPECT_EQ(e4m3_from_float_sat(0.0f), 0x00);
  EXPECT_EQ(e4m3_from_float_sat(-0.0f), 0x80);
  // Below half the smallest subnormal: zero; at exactly half: tie to even (zero).
  EXPECT_EQ(e4m3_from_float_sat(0.0009765625f), 0x00);
  EXPECT_EQ(e4m3_from_float_sat(std::nextafter(0.0009765625f, 1.0f)), 0x01);
  EXPECT_EQ(e4m3_from_float_sat(1e-30f), 0x00);
}

TEST(E4m3, RandomValuesMatchBruteForceNearest) {
  test::SeededRng r;
  for (float x : random_magnitudes(r.rng, 200000, 1e-5, 1e3)) ASSERT_EQ(e4m3_from_float_sat(x), e4m3_ref_encode(x)) << x;
}

// ---- e2m1 -----------------------------------------------------------------------------------
TEST(E2m1, DecodesEveryCode) {
  for (int c = 0; c < 16; ++c) {
    EXPECT_EQ(static_cast<double>(e2m1_to_float(static_cast<uint8_t>(c))), e2m1_ref_value(c)) << "code " << c;
    EXPECT_EQ(std::signbit(e2m1_to_float(static_cast<uint8_t>(c))), c >= 8) << "code " << c;
  }
}

TEST(E2m1, EncodesEveryValueBackToItsCode) {
  for (int c = 0; c < 16; ++c) {
    if (c == 8) continue;  // -0: see ZeroAndSignRules
    EXPECT_EQ(e2m1_from_float(e2m1_to_float(static_cast<uint8_t>(c))), c) << "code " << c;
  }
}

TEST(E2m1, EveryTieRoundsToEvenCode) {
  // The midpoints and the code each must produce (formats.md): ties go to the even code.
  const struct { float x; uint8_t code; } ties[] = {{0.25f, 0}, {0.75f, 2}, {1.25f, 2}, {1.75f, 4},
                                                    {2.5f, 4},  {3.5f, 6},  {5.0f, 6}};
  for (const auto& t : ties) {
    EXPECT_EQ(e2m1_from_float(t.x), t.code) << t.x;
    EXPECT_EQ(e2m1_from_float(-t.x), t.code | 8) << -t.x;
    EXPECT_EQ(e2m1_from_float(t.x), e2m1_ref_encode(t.x)) << t.x;
    // Either side of the tie goes to the nearer neighbour.
    EXPECT_EQ(e2m1_from_float(std::nextafter(t.x, 0.0f)), e2m1_ref_encode(std::nextafter(t.x, 0.0f)));
    EXPECT_EQ(e2m1_from_float(std::nextafter(t.x, 10.0f)), e2m1_ref_encode(std::nextafter(t.x, 10.0f)));
    EXPECT_NE(e2m1_from_float(std::nextafter(t.x, 0.0f)), e2m1_from_float(std::nextafter(t.x, 10.0f)));
  }
}

TEST(E2m1, SaturatesAt6) {
  for (float v : {6.0f, 6.5f, 100.0f, 1e30f, std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(e2m1_from_float(v), 7) << v;
    EXPECT_EQ(e2m1_from_float(-v), 15) << -v;
  }
}

TEST(E2m1, ZeroAndSignRules) {
  EXPECT_EQ(e2m1_from_float(0.0f), 0);
  EXPECT_EQ(e2m1_from_float(-0.0f), 0);     // sign from x < 0, as ModelOpt
  EXPECT_EQ(e2m1_from_float(-0.1f), 8);     // a negative value rounding to zero keeps its sign
  EXPECT_EQ(e2m1_from_float(std::numeric_limits<float>::quiet_NaN()), 0);  // documented: NaN -> +0
}

TEST(E2m1, RandomValuesMatchBruteForceNearest) {
  test::SeededRng r;
  for (float x : random_magnitudes(r.rng, 200000, 1e-3, 20)) ASSERT_EQ(e2m1_from_float(x), e2m1_ref_encode(x)) << x;
}

TEST(E2m1, PackUnpackEveryByte) {
  for (int b = 0; b < 256; ++b) {
    const uint8_t lo = e2m1_unpack_lo(static_cast<uint8_t>(b)), hi = e2m1_unpack_hi(static_cast<uint8_t>(b));
    EXPECT_EQ(lo, b & 0xF);
    EXPECT_EQ(hi, b >> 4);
    EXPECT_EQ(e2m1_pack(lo, hi), b);
  }
  EXPECT_EQ(e2m1_pack(0x1, 0x2), 0x21);  // element 2j in the low nibble
}

// ---- ue8m0 ----------------------------------------------------------------------------------
TEST(Ue8m0, DecodesEveryCode) {
  for (int c = 0; c < 255; ++c)
    EXPECT_EQ(static_cast<double>(ue8m0_to_float(static_cast<uint8_t>(c))), std::ldexp(1.0, c - 127)) << c;
  EXPECT_TRUE(std::isnan(ue8m0_to_float(0xFF)));
}

TEST(Ue8m0, CeilIsTheSmallestPowerOfTwoNotBelow) {
  test::SeededRng r;
  std::vector<float> vs = random_magnitudes(r.rng, 100000, 1e-44, 1e38);
  for (int c = 0; c < 255; ++c) {  // every power of two and its fp32 neighbours
    const float p = ue8m0_to_float(static_cast<uint8_t>(c));
    vs.insert(vs.end(), {p, std::nextafter(p, 0.0f), std::nextafter(p, 1e38f)});
  }
  for (float v : vs) {
    v = std::fabs(v);
    const uint8_t c = ue8m0_ceil_from_float(v);
    const double p = std::ldexp(1.0, c - 127);
    ASSERT_GE(p, static_cast<double>(v)) << v;
    if (c > 0) {
      ASSERT_LT(p / 2, static_cast<double>(v)) << v;
    }
  }
  EXPECT_EQ(ue8m0_ceil_from_float(0.0f), 0);
  EXPECT_EQ(ue8m0_ceil_from_float(1.0f), 127);
  EXPECT_EQ(ue8m0_ceil_from_float(1.5f), 128);
  EXPECT_EQ(ue8m0_ceil_from_float(3.0e38f), 254);  // clamped at 2^127
}

// ---- bf16 -------------------------------------------------------------------------------------
TEST(Bf16, RoundTripAndTiesToEven) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(bf16_from_float(f))));
      continue;
    }
    ASSERT_EQ(bf16_from_float(f), h);
  }
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0). 1 + 3*2^-8 goes up.
  EXPECT_EQ(bf16_to_float(bf16_from_float(1.00390625f)), 1.0f);
  EXPECT_EQ(bf16_to_float(bf16_from_float(1.01171875f)), 1.015625f);
  EXPECT_TRUE(same_bits(round_to_bf16(-0.0f), -0.0f));
}

}  // namespace
}  // namespace fp4moe
