// The weight layout the W4A16 kernels read, the repack from a checkpoint matrix into it
// (done once at load) and its inverse. Header-only; the repack is host code, the code word's
// dequantization (w4_dequant_word) is host and device code: the CPU tests check the round trip
// and the dequantization without a GPU.
//
// Why this layout. The kernels compute y^T = W . x^T with mma.sync m16n8k16 and the WEIGHT
// as the A operand (16 weight rows x 16 k per instruction, "swap AB": few tokens fill the
// n8 side, so decode wastes no tensor-core rows). One A fragment is 8 codes per lane per
// k16 step; for a tile of 16 rows x 64 k that is 32 codes = 16 bytes per lane, so a warp
// reads a 512-byte tile with one coalesced 16-byte load per lane and needs no shared memory
// or shuffles to build its fragments.
//
//   tile (strip s = row/16, kt = k/64), tiles ordered [strip][kt], 512 code bytes each.
//   lane l = 4*g + q (g = l/4 in 0..7, q = l%4) owns bytes [16*l, 16*l+16) of the tile:
//   word j (k16 step j, kb = 64*kt + 16*j, little-endian) holds the 8 codes of the lane's four
//   A registers, each a bf16 pair (lo half: even k, hi half: odd k):
//     r0: W[g][kb+2q],   W[g][kb+2q+1]      r1: W[g+8][kb+2q],   W[g+8][kb+2q+1]
//     r2: W[g][kb+2q+8], W[g][kb+2q+9]      r3: W[g+8][kb+2q+8], W[g+8][kb+2q+9]
//   A code's bits are not a contiguous nibble: they sit where the dequant below finds them.
//   A bf16 pair whose halves are e2m1 codes times 2^-126 has the lo code's sign at bit 15 and
//   its two exponent bits and mantissa bit at bits 8..6, the hi code's at 31 and 24..22
//   (kW4PairMask; e2m1's subnormal 0.5 lands on bf16's subnormal grid). The word is laid out
//   so that (w4_dequant_word, 9 integer ops for four registers):
//     r0 = w & mask;  r1 = rotr(w, 4) & mask;  r2 = rotr(w, 10) & mask;
//     r3 = ((w << 2) & 0x80C080C0) | ((w >> 6) & 0x01000100)
//   (a rotation is one funnel shift on the integer ALU; r3's two shifts are multiplies on the
//   FMA pipe, so the decode kernels' two busy pipes share the work: notes/gpu-notes.md steps
//   21-23). The four registers' source bits tile the word exactly once (w4_code_bit; the tests
//   check it).
// Scales are pre-arranged per quad (the 4 lanes of a group g share their rows): 8 bytes
// per quad per tile for NVFP4 ([j][row g, row g+8]), 4 bytes for MXFP4 ([block][g, g+8]),
// and preprocessed so that one integer multiply-add turns a byte into the bf16 S' with
//   (code * 2^-126) * S' == code * scale * 2^-62   exactly (the result is a normal bf16),
// the 2^62 going back in the epilogue with the global scale:
//   NVFP4: e4m3 -> "e5m3" (5-bit exponent, bias 10, no sign, no NaN): the e4m3 subnormals
//          become normal numbers, so S' bits = (b << 4) + (181 << 7). Byte 0 is a zero
//          scale; its block's codes are stored as zeros (dequantized value unchanged).
//          Negative or NaN scales are rejected (a checkpoint `doctor` would refuse).
//   MXFP4: ue8m0 kept; S' bits = (b << 7) + (64 << 7), exact for codes 64..190 (scales
//          2^-63 .. 2^63); codes outside are rejected with the row and block, unless the
//          block's codes are all +-0 (then its scale is stored as 2^0: the same +-0 values).
//          The NaN code 0xFF is rejected.
// Rows are padded to 16 and k to 64 with zero codes; the kernels never write padded rows
// and read activations only below K.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/blocks.h"
#include "formats/codecs.h"
#include "formats/matrix.h"

namespace fp4moe::cuda {

inline constexpr int kTileRows = 16;   // one mma A tile of weight rows
inline constexpr int kTileK = 64;      // four k16 steps
inline constexpr int kTileCodeBytes = kTileRows * kTileK / 2;  // 512
inline constexpr int kNvScaleBytesPerTile = 8 * 8;   // 8 quads x (4 steps x 2 rows)
inline constexpr int kMxScaleBytesPerTile = 8 * 4;   // 8 quads x (2 blocks x 2 rows)
inline constexpr int kBf16ExpOffset = 64;            // S' = scale * 2^64
inline constexpr float kEpilogueUnscale = 4611686018427387904.0f;  // 2^62 (= 2^126 / 2^64)
static_assert(kTileCodeBytes == 32 * 16, "one 16-byte load per lane covers a tile");

// ---- the code word and its dequantization (host and device: FP4_HD, formats/codecs.h) ------
inline constexpr uint32_t kW4PairMask = 0x81C081C0u;  // bits 6-8, 15, 22-24, 31 of a bf16 pair
inline constexpr uint32_t kW4R3Left = 0x80C080C0u;    // r3's bits taken from w << 2
inline constexpr uint32_t kW4R3Right = 0x01000100u;   // r3's bits taken from w >> 6
static_assert((kW4R3Left | kW4R3Right) == kW4PairMask && (kW4R3Left & kW4R3Right) == 0, "r3's two parts");

FP4_HD uint32_t w4_mulhi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);  // stays an IMAD.HI: a right shift off the integer ALU
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}
// Rotate right by n (0 < n < 32): one funnel shift (SHF.R.W) on the device.
FP4_HD uint32_t w4_rotr(uint32_t w, int n) {
#if defined(__CUDA_ARCH__)
  return __funnelshift_r(w, w, static_cast<unsigned>(n));
#else
  return (w >> n) | (w << (32 - n));
#endif
}
// Four A registers (bf16 pairs, value code * 2^-126) from one code word.
FP4_HD void w4_dequant_word(uint32_t w, uint32_t (&r)[4]) {
  r[0] = w & kW4PairMask;
  r[1] = w4_rotr(w, 4) & kW4PairMask;
  r[2] = w4_rotr(w, 10) & kW4PairMask;
  r[3] = ((w << 2) & kW4R3Left) | (w4_mulhi(w, 1u << 26) & kW4R3Right);
}
// Bit of the code word that holds bit c (0: mantissa, 1, 2: exponent, 3: sign) of the code in
// register reg (0..3), half (0: lo, 1: hi): w4_dequant_word's inverse.
constexpr int w4_code_bit(int reg, int half, int c) {
  const int t = (c < 3 ? 6 + c : 15) + 16 * half;  // the bit of the bf16 pair
  switch (reg) {
    case 0: return t;
    case 1: return (t + 4) % 32;
    case 2: return (t + 10) % 32;
    default: return ((kW4R3Left >> t) & 1u) ? t - 2 : t + 6;
  }
}

static_assert(kTileK % kMxfp4Block == 0 && kTileK % kNvfp4Block == 0, "a tile holds whole scale blocks");

// A repacked FP4 weight (host copy; upload with DeviceW4Matrix in linear.h).
struct W4Layout {
  MatrixFormat format = MatrixFormat::kNVFP4;
  int64_t rows = 0, cols = 0;       // the logical matrix N x K
  int64_t strips = 0, ktiles = 0;   // ceil(N/16), ceil(K/64)
  std::vector<uint8_t> codes;       // strips * ktiles * 512
  std::vector<uint8_t> scales;      // strips * ktiles * (64 | 32)
  std::vector<OutputRange> ranges;  // one global scale per output range, as in the Matrix
  int64_t scale_bytes_per_tile() const {
    return format == MatrixFormat::kNVFP4 ? kNvScaleBytesPerTile : kMxScaleBytesPerTile;
  }
};

// ---- per-scale preprocessing --------------------------------------------------------------
// e4m3 (non-negative, not NaN) -> e5m3 byte: value 2^(E-10) * (1 + f/8), E in 1..18; 0 = zero.
inline uint8_t nvfp4_scale_to_e5m3(uint8_t e4m3) {
  const float v = e4m3_to_float(e4m3);
  if (v == 0.0f) return 0;
  const uint32_t b = f32_bits(v);
  const int E = static_cast<int>(b >> 23) - 127;  // -9 .. 8: every e4m3 value is an fp32 normal
  const uint32_t f = (b >> 20) & 7u;               // e4m3 values carry at most 3 mantissa bits
  return static_cast<uint8_t>(((E + 10) << 3) | f);
}
inline uint8_t nvfp4_scale_from_e5m3(uint8_t c) {
  if (c == 0) return 0;
  const int E = (c >> 3) - 10;
  const float v = f32_from_bits(static_cast<uint32_t>(E + 127) << 23 | static_cast<uint32_t>(c & 7u) << 20);
  return e4m3_from_float_sat(v);  // exact: v is an e4m3 value
}
inline constexpr int kMxScaleMin = 128 - kBf16ExpOffset;  // 64: code * 2^(sc-127) * 2^-62 stays normal
inline constexpr int kMxScaleMax = 254 - kBf16ExpOffset;  // 190: S' stays below bf16's max exponent
static_assert(kMxScaleMin == kMxfp4KernelScaleMin && kMxScaleMax == kMxfp4KernelScaleMax,
              "the doctor's bounds (formats/blocks.h)");

// ---- where element (row, k) lives ---------------------------------------------------------
struct CodeSlot {
  int64_t word;  // byte offset of the 32-bit little-endian code word in codes
  int reg;       // its A register (0..3) ...
  int half;      // ... and half (0: even k, 1: odd k); bits: w4_code_bit(reg, half, 0..3)
};
inline CodeSlot w4_code_slot(const W4Layout& L, int64_t row, int64_t k) {
  const int64_t s = row / kTileRows, kt = k / kTileK;
  const int r = static_cast<int>(row % kTileRows), kk = static_cast<int>(k % kTileK);
  const int j = kk / 16, kin = kk % 16;
  const int g = r % 8, hi_row = r / 8;      // rows g and g+8
  const int hi_k = kin / 8, kq = kin % 8;   // k halves 0..7 and 8..15
  const int q = kq / 2, odd = kq % 2;
  const int lane = 4 * g + q;
  const int64_t tile = s * L.ktiles + kt;
  return CodeSlot{tile * kTileCodeBytes + lane * 16 + j * 4, 2 * hi_k + hi_row, odd};
}
inline void w4_put_code(std::vector<uint8_t>& codes, const CodeSlot& c, uint8_t code) {
  for (int b = 0; b < 4; ++b)
    if ((code >> b) & 1u) {
      const int bit = w4_code_bit(c.reg, c.half, b);
      codes[static_cast<size_t>(c.word + bit / 8)] |= static_cast<uint8_t>(1u << (bit % 8));
    }
}
inline uint8_t w4_get_code(const std::vector<uint8_t>& codes, const CodeSlot& c) {
  uint8_t code = 0;
  for (int b = 0; b < 4; ++b) {
    const int bit = w4_code_bit(c.reg, c.half, b);
    code |= static_cast<uint8_t>(((codes[static_cast<size_t>(c.word + bit / 8)] >> (bit % 8)) & 1u) << b);
  }
  return code;
}
// Scale byte of (row, block index along k in the format's own blocks).
inline int64_t w4_scale_slot(const W4Layout& L, int64_t row, int64_t kblock) {
  const int64_t s = row / kTileRows;
  const int r = static_cast<int>(row % kTileRows), g = r % 8, hi_row = r / 8;
  const bool nv = L.format == MatrixFormat::kNVFP4;
  const int per_tile = nv ? kTileK / kNvfp4Block : kTileK / kMxfp4Block;  // 4 | 2
  const int64_t kt = kblock / per_tile;
  const int b = static_cast<int>(kblock % per_tile);
  const int64_t tile = s * L.ktiles + kt;
  return tile * L.scale_bytes_per_tile() + g * (2 * per_tile) + 2 * b + hi_row;
}

// ---- repack and its inverse ---------------------------------------------------------------
// Throws std::invalid_argument naming the matrix, row and block for inputs the layout cannot
// hold exactly (see the header comment).
inline W4Layout repack_w4(const MatrixView& w) {
  validate_matrix(w);
  if (w.format != MatrixFormat::kNVFP4 && w.format != MatrixFormat::kMXFP4)
    throw std::invalid_argument(std::string("repack_w4: expected an NVFP4 or MXFP4 matrix, got ") + to_string(w.format));
  const bool nv = w.format == MatrixFormat::kNVFP4;
  const int block = nv ? kNvfp4Block : kMxfp4Block;
  W4Layout L;
  L.format = w.format;
  L.rows = w.rows;
  L.cols = w.cols;
  L.strips = (w.rows + kTileRows - 1) / kTileRows;
  L.ktiles = (w.cols + kTileK - 1) / kTileK;
  L.codes.assign(static_cast<size_t>(L.strips * L.ktiles * kTileCodeBytes), 0);
  L.scales.assign(static_cast<size_t>(L.strips * L.ktiles * L.scale_bytes_per_tile()), 0);
  L.ranges.assign(w.ranges, w.ranges + w.num_ranges);
  const int64_t sc = w.cols / block;
  auto where = [&](int64_t n, int64_t b) {
    return std::string(to_string(w.format)) + " matrix [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
           "], row " + std::to_string(n) + " block " + std::to_string(b);
  };
  for (int64_t n = 0; n < w.rows; ++n) {
    for (int64_t b = 0; b < sc; ++b) {
      const uint8_t s = w.scales[n * sc + b];
      uint8_t stored;
      bool zero_block = false;
      if (nv) {
        if (e4m3_is_nan(s)) throw std::invalid_argument("repack_w4: NaN scale at " + where(n, b));
        if ((s & 0x80u) && s != 0x80u) throw std::invalid_argument("repack_w4: negative scale at " + where(n, b));
        stored = nvfp4_scale_to_e5m3(s);
        zero_block = stored == 0;
      } else {
        if (s == kUe8m0NaN) throw std::invalid_argument("repack_w4: NaN scale (ue8m0 0xFF) at " + where(n, b));
        stored = s;
        if (s < kMxScaleMin || s > kMxScaleMax) {
          // A block whose codes are all +-0 is +-0 whatever its scale (the OCP MX recipe gives an all-zero
          // block the smallest code, 2^-127): it keeps its codes and gets the scale 2^0.
          bool zero_codes = true;
          for (int64_t k = b * block; k < (b + 1) * block && zero_codes; k += 2)
            zero_codes = (w.data[n * (w.cols / 2) + k / 2] & 0x77u) == 0;
          if (!zero_codes)
            throw std::invalid_argument("repack_w4: ue8m0 scale code " + std::to_string(s) + " at " + where(n, b) +
                                        " is outside 2^-63..2^63, which the bf16 kernels cannot hold exactly");
          stored = 127;
        }
      }
      L.scales[static_cast<size_t>(w4_scale_slot(L, n, b))] = stored;
      for (int64_t k = b * block; k < (b + 1) * block; ++k) {
        const uint8_t byte = w.data[n * (w.cols / 2) + k / 2];
        const uint8_t code = zero_block ? 0 : ((k % 2) ? e2m1_unpack_hi(byte) : e2m1_unpack_lo(byte));
        w4_put_code(L.codes, w4_code_slot(L, n, k), code);
      }
    }
  }
  return L;
}

// The inverse: back to the checkpoint's row-major codes and scales (a Matrix). Blocks with a
// zero scale come back with zero codes (repack_w4 canonicalizes them).
inline Matrix unrepack_w4(const W4Layout& L) {
  const bool nv = L.format == MatrixFormat::kNVFP4;
  const int block = nv ? kNvfp4Block : kMxfp4Block;
  Matrix m;
  m.format = L.format;
  m.scale_kind = nv ? ScaleKind::kE4m3 : ScaleKind::kUe8m0;
  m.rows = L.rows;
  m.cols = L.cols;
  m.data.assign(static_cast<size_t>(L.rows * L.cols / 2), 0);
  m.scales.assign(static_cast<size_t>(L.rows * (L.cols / block)), 0);
  m.ranges = L.ranges;
  const int64_t sc = L.cols / block;
  for (int64_t n = 0; n < L.rows; ++n) {
    for (int64_t b = 0; b < sc; ++b) {
      const uint8_t stored = L.scales[static_cast<size_t>(w4_scale_slot(L, n, b))];
      m.scales[static_cast<size_t>(n * sc + b)] = nv ? nvfp4_scale_from_e5m3(stored) : stored;
    }
    for (int64_t k = 0; k < L.cols; ++k) {
      const uint8_t code = w4_get_code(L.codes, w4_code_slot(L, n, k));
      m.data[static_cast<size_t>(n * (L.cols / 2) + k / 2)] |= static_cast<uint8_t>(code << ((k % 2) * 4));
    }
  }
  return m;
}

// Bytes the kernels stream per call (codes + scales), for the benchmark's roof.
inline int64_t w4_stream_bytes(const W4Layout& L) {
  return static_cast<int64_t>(L.codes.size() + L.scales.size());
}

}  // namespace fp4moe::cuda
