// Whole-tensor quantizers, layout transforms and matrix bookkeeping (see quantize.h and
// matrix.h). Every per-element decision is delegated to blocks.h/codecs.h so that host and
// device code share one definition.
#include "formats/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "formats/blocks.h"
#include "formats/codecs.h"

namespace fp4moe {
namespace {

std::string shape_str(int64_t rows, int64_t cols) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "[%lld, %lld]", static_cast<long long>(rows), static_cast<long long>(cols));
  return buf;
}

void require_shape(int64_t rows, int64_t cols, int64_t block, const char* what) {
  if (rows < 0 || cols < 0) throw std::invalid_argument(std::string(what) + ": negative shape " + shape_str(rows, cols));
  if (cols % block != 0)
    throw std::invalid_argument(std::string(what) + ": the input dimension of " + shape_str(rows, cols) +
                                " is not a multiple of the block size " + std::to_string(block));
}

bool is_normal_positive(float v) { return std::isfinite(v) && v >= 1.17549435e-38f; }

}  // namespace

// ---- matrix bookkeeping ---------------------------------------------------------------------
const char* to_string(MatrixFormat f) {
  switch (f) {
    case MatrixFormat::kBF16: return "bf16";
    case MatrixFormat::kNVFP4: return "nvfp4";
    case MatrixFormat::kMXFP4: return "mxfp4";
    case MatrixFormat::kFP8Block: return "fp8-block";
  }
  return "?";
}
const char* to_string(ScaleKind s) {
  switch (s) {
    case ScaleKind::kNone: return "none";
    case ScaleKind::kE4m3: return "e4m3";
    case ScaleKind::kUe8m0: return "ue8m0";
    case ScaleKind::kF32: return "f32";
  }
  return "?";
}

int64_t matrix_scale_cols(MatrixFormat f, int64_t cols) {
  switch (f) {
    case MatrixFormat::kBF16: return 0;
    case MatrixFormat::kNVFP4: return cols / kNvfp4Block;
    case MatrixFormat::kMXFP4: return cols / kMxfp4Block;
    case MatrixFormat::kFP8Block: return (cols + kFp8BlockCols - 1) / kFp8BlockCols;
  }
  return 0;
}

int64_t matrix_data_bytes(MatrixFormat f, int64_t rows, int64_t cols) {
  switch (f) {
    case MatrixFormat::kBF16: return rows * cols * 2;
    case MatrixFormat::kNVFP4:
    case MatrixFormat::kMXFP4: return rows * cols / 2;
    case MatrixFormat::kFP8Block: return rows * cols;
  }
  return 0;
}

int64_t matrix_scale_bytes(MatrixFormat f, ScaleKind s, int64_t rows, int64_t cols) {
  switch (f) {
    case MatrixFormat::kBF16: return 0;
    case MatrixFormat::kNVFP4:
    case MatrixFormat::kMXFP4: return rows * matrix_scale_cols(f, cols);
    case MatrixFormat::kFP8Block:
      return (rows + kFp8BlockRows - 1) / kFp8BlockRows * matrix_scale_cols(f, cols) * (s == ScaleKind::kF32 ? 4 : 1);
  }
  return 0;
}

float matrix_row_global_scale(const MatrixView& w, int64_t row) {
  // Ranges are few (1 or 2 in practice): a linear scan is the clear choice.
  float g = w.ranges[0].global_scale;
  for (int32_t i = 1; i < w.num_ranges && w.ranges[i].row_begin <= row; ++i) g = w.ranges[i].global_scale;
  return g;
}

void validate_matrix(const MatrixView& w) {
  const std::string where = std::string(to_string(w.format)) + " matrix " + shape_str(w.rows, w.cols);
  auto fail = [&](const std::string& why) { throw std::invalid_argument(where + ": " + why); };
  if (w.rows < 0 || w.cols < 0) fail("negative shape");
  ScaleKind want = ScaleKind::kNone;
  int64_t block = 1;
  switch (w.format) {
    case MatrixFormat::kBF16: break;
    case MatrixFormat::kNVFP4: want = ScaleKind::kE4m3; block = kNvfp4Block; break;
    case MatrixFormat::kMXFP4: want = ScaleKind::kUe8m0; block = kMxfp4Block; break;
    case MatrixFormat::kFP8Block:
      if (w.scale_kind != ScaleKind::kF32 && w.scale_kind != ScaleKind::kUe8m0) fail("FP8 block scales must be f32 or ue8m0");
      want = w.scale_kind;
      break;
  }
  if (w.scale_kind != want) fail(std::string("scale kind ") + to_string(w.scale_kind) + " (expected " + to_string(want) + ")");
  if (w.cols % block != 0) fail("input dimension is not a multiple of the block size " + std::to_string(block));
  if (w.rows * w.cols > 0 && w.data == nullptr) fail("no data");
  if (want != ScaleKind::kNone && w.rows * w.cols > 0 && w.scales == nullptr) fail("no scales");
  if (w.num_ranges < 1 || w.ranges == nullptr) fail("no output range");
  if (w.ranges[0].row_begin != 0) fail("the first output range must start at row 0");
  for (int32_t i = 0; i < w.num_ranges; ++i) {
    if (i > 0 && w.ranges[i].row_begin <= w.ranges[i - 1].row_begin) fail("output ranges are not strictly increasing");
    if (w.ranges[i].row_begin > w.rows && w.rows > 0) fail("output range starts past the last row");
    if (!std::isfinite(w.ranges[i].global_scale)) fail("output range " + std::to_string(i) + " has a non-finite global scale");
  }
}

int block_scale_bytes(ScaleKind kind) { return kind == ScaleKind::kF32 ? 4 : kind == ScaleKind::kNone ? 0 : 1; }

float block_scale_value(ScaleKind kind, const uint8_t* p) {
  switch (kind) {
    case ScaleKind::kNone: return 1.0f;
    case ScaleKind::kUe8m0: return ue8m0_to_float(p[0]);
    case ScaleKind::kE4m3: return e4m3_to_float(p[0]);
    case ScaleKind::kF32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
  }
  return 1.0f;
}

BlockScaleClass classify_block_scale(ScaleKind kind, const uint8_t* p) {
  if (kind == ScaleKind::kNone) return BlockScaleClass::kNormal;
  const float v = block_scale_value(kind, p);
  if (std::isnan(v)) return BlockScaleClass::kNaN;
  if (std::isinf(v)) return BlockScaleClass::kInfinite;
  if (kind == ScaleKind::kUe8m0) return BlockScaleClass::kNormal;  // powers of two: no sign, zero or mantissa to lose
  if (v < 0.0f) return BlockScaleClass::kNegative;
  if (v == 0.0f) return BlockScaleClass::kZero;
  const float min_normal = kind == ScaleKind::kE4m3 ? 0.015625f : std::numeric_limits<float>::min();  // 2^-6, 2^-126
  return v < min_normal ? BlockScaleClass::kDenormal : BlockScaleClass::kNormal;
}

std::string matrix_bad_value(const MatrixView& w) {
  if (w.rows <= 0 || w.cols <= 0) return "";
  const int64_t data_bytes = matrix_data_bytes(w.format, w.rows, w.cols);
  auto at = [](int64_t i, int64_t cols) {
    char b[48];
    std::snprintf(b, sizeof b, "[%lld, %lld]", static_cast<long long>(i / cols), static_cast<long long>(i % cols));
    return std::string(b);
  };
  auto code = [](unsigned c, int digits) {
    char b[16];
    std::snprintf(b, sizeof b, "0x%0*X", digits, c);
    return std::string(b);
  };
  const std::string nan_out = ": the outputs would be NaN", flip = ": the sign of its weights would flip";
  if (w.format == MatrixFormat::kBF16) {
    for (int64_t i = 0; i < data_bytes / 2; ++i) {
      const uint16_t h = static_cast<uint16_t>(w.data[2 * i] | (w.data[2 * i + 1] << 8));
      if (!f32_is_finite(bf16_to_float(h))) return "weight " + at(i, w.cols) + " is not finite (bf16 " + code(h, 4) + ")" + nan_out;
    }
    return "";
  }
  if (w.format == MatrixFormat::kFP8Block)
    for (int64_t i = 0; i < data_bytes; ++i)
      if (e4m3_is_nan(w.data[i])) return "weight " + at(i, w.cols) + " is NaN (e4m3 " + code(w.data[i], 2) + ")" + nan_out;
  // Block scales, indexed [row, block] (FP8 block: [row block, column block]), in one pass. Zero
  // and denormal scales are valid encodings (the doctor reports them); NaN, infinite and negative
  // ones are not, nor a finite scale that makes a weight overflow fp32 with its code and global
  // scale (MXFP4: ue8m0 2^126 x code 4; NVFP4: a global scale above ~1.3e35; FP8 blocks: scales
  // above FLT_MAX / 448): a block's codes are read only when its largest possible weight overflows.
  const int sb = block_scale_bytes(w.scale_kind);
  const int64_t n = sb ? matrix_scale_bytes(w.format, w.scale_kind, w.rows, w.cols) / sb : 0;
  const int64_t scale_cols = matrix_scale_cols(w.format, w.cols);
  const bool fp8 = w.format == MatrixFormat::kFP8Block;
  const int64_t block_cols = fp8 ? kFp8BlockCols : w.format == MatrixFormat::kNVFP4 ? kNvfp4Block : kMxfp4Block;
  const int64_t block_rows = fp8 ? kFp8BlockRows : 1;
  const double max_code = fp8 ? 448.0 : 6.0, limit = std::numeric_limits<float>::max();
  auto global_of = [&](int64_t row) {
    return w.num_ranges > 0 ? std::fabs(static_cast<double>(matrix_row_global_scale(w, row))) : 1.0;
  };
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* sp = w.scales + i * sb;
    const BlockScaleClass c = classify_block_scale(w.scale_kind, sp);
    auto what = [&](const char* is, bool with_code) {
      const std::string enc =
          with_code && sb == 1 ? " (" + std::string(to_string(w.scale_kind)) + " " + code(sp[0], 2) + ")" : "";
      return "block scale " + at(i, scale_cols) + " is " + is + enc;
    };
    if (c == BlockScaleClass::kNaN) return what("NaN", true) + nan_out;
    if (c == BlockScaleClass::kInfinite) return what("infinite", false) + nan_out;
    if (c == BlockScaleClass::kNegative) return what("negative", true) + flip;
    const double s = block_scale_value(w.scale_kind, sp);
    const int64_t r0 = i / scale_cols * block_rows, r1 = std::min(w.rows, r0 + block_rows);
    if (!(s * max_code * std::max(global_of(r0), global_of(r1 - 1)) > limit)) continue;
    const int64_t c0 = i % scale_cols * block_cols, c1 = std::min(w.cols, c0 + block_cols);
    for (int64_t r = r0; r < r1; ++r) {
      const double g = global_of(r);
      for (int64_t col = c0; col < c1; ++col) {
        const int64_t e = r * w.cols + col;
        const uint8_t byte = w.data[fp8 ? e : e / 2];
        const float v = fp8 ? e4m3_to_float(byte) : e2m1_to_float(col % 2 ? e2m1_unpack_hi(byte) : e2m1_unpack_lo(byte));
        if (!(std::fabs(static_cast<double>(v) * s * g) > limit)) continue;
        char b[128];
        if (g != 1.0)
          std::snprintf(b, sizeof b, " overflows fp32 (%g x block scale %g x global scale %g)", static_cast<double>(v), s, g);
        else
          std::snprintf(b, sizeof b, " overflows fp32 (%g x block scale %g)", static_cast<double>(v), s);
        return "weight " + at(e, w.cols) + b + ": not a representable weight, the outputs would overflow";
      }
    }
  }
  return "";
}

// ---- NVFP4 weights ---------------------------------------------------------------------
float nvfp4_weight_global_scale(float amax, Nvfp4WeightOptions opt) {
  if (!(amax > 0.0f)) return 1.0f;
  if (opt.rounding == GlobalScaleRounding::kCudaReciprocal) {
    const float inv = 1.0f / kNvfp4GlobalMax;
    return amax * inv;
  }
  return amax / kNvfp4GlobalMax;
}

Matrix quantize_nvfp4_weight(const float* w, int64_t rows, int64_t cols, Nvfp4WeightOptions opt) {
  require_shape(rows, cols, kNvfp4Block, "NVFP4 weight quantization");
  Matrix m;
  m.format = MatrixFormat::kNVFP4;
  m.scale_kind = ScaleKind::kE4m3;
  m.rows = rows;
  m.cols = cols;
  m.data.resize(static_cast<size_t>(rows * cols / 2));
  m.scales.resize(static_cast<size_t>(rows * cols / kNvfp4Block));
  float amax = 0.0f;
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (std::isnan(w[i])) throw std::invalid_argument("NVFP4 weight quantization: NaN at element " + std::to_string(i));
    amax = std::max(amax, std::fabs(w[i]));
  }
  if (!std::isfinite(amax)) throw std::invalid_argument("NVFP4 weight quantization: infinite weight");
  const float ws2 = nvfp4_weight_global_scale(amax, opt);
  m.ranges = {OutputRange{0, ws2}};
  const int64_t nblocks = rows * cols / kNvfp4Block;
  for (int64_t b = 0; b < nblocks; ++b) {
    const float* blk = w + b * kNvfp4Block;
    const uint8_t s = nvfp4_weight_block_scale(block_amax(blk, kNvfp4Block), ws2);
    m.scales[static_cast<size_t>(b)] = s;
    nvfp4_weight_block_codes(blk, s, ws2, m.data.data() + b * (kNvfp4Block / 2));
  }
  return m;
}

// ---- NVFP4 activations ----------------------------------------------------------------------
ActGlobalScale act_global_scale_static(float input_scale) {
  if (!is_normal_positive(input_scale))
    throw std::invalid_argument("input_scale " + std::to_string(input_scale) +
                                " is not a positive, finite, normal number: activations cannot be quantized with it");
  const float gs = 1.0f / input_scale;
  if (!std::isfinite(gs)) throw std::invalid_argument("1/input_scale overflows fp32");
  return ActGlobalScale{gs, input_scale};
}

ActGlobalScale act_global_scale_dynamic(const float* x, int64_t count) {
  float amax = 0.0f;
  for (int64_t i = 0; i < count; ++i)
    if (std::isfinite(x[i])) amax = std::max(amax, std::fabs(x[i]));
  const float gs = nvfp4_dynamic_global_scale(amax);
  return ActGlobalScale{gs, 1.0f / gs};
}

Nvfp4Activations quantize_nvfp4_activations(const float* x, int64_t rows, int64_t cols, ActGlobalScale g,
                                            ScaleLayout layout) {
  require_shape(rows, cols, kNvfp4Block, "NVFP4 activation quantization");
  Nvfp4Activations a;
  a.rows = rows;
  a.cols = cols;
  a.layout = layout;
  a.global = g;
  a.packed.resize(static_cast<size_t>(rows * cols / 2));
  const int64_t scols = cols / kNvfp4Block;
  std::vector<uint8_t> rm(static_cast<size_t>(rows * scols));
  for (int64_t b = 0; b < rows * scols; ++b)
    rm[static_cast<size_t>(b)] = nvfp4_act_quantize_block(x + b * kNvfp4Block, g.gs, a.packed.data() + b * (kNvfp4Block / 2));
  a.scales = layout == ScaleLayout::kRowMajor ? std::move(rm) : swizzle_scales_128x4(rm.data(), rows, scols);
  return a;
}

std::vector<float> dequantize_nvfp4_activations(const Nvfp4Activations& a) {
  const int64_t scols = a.cols / kNvfp4Block;
  const std::vector<uint8_t> rm =
      a.layout == ScaleLayout::kRowMajor ? a.scales : unswizzle_scales_128x4(a.scales.data(), a.rows, scols);
  std::vector<float> out(static_cast<size_t>(a.rows * a.cols));
  for (int64_t i = 0; i < a.rows * a.cols; ++i) {
    const uint8_t byte = a.packed[static_cast<size_t>(i / 2)];
    const uint8_t code = (i % 2 == 0) ? e2m1_unpack_lo(byte) : e2m1_unpack_hi(byte);
    const float s = e4m3_to_float(rm[static_cast<size_t>(i / kNvfp4Block)]);
    out[static_cast<size_t>(i)] = e2m1_to_float(code) * s * a.global.dequant_scale;
  }
  return out;
}

// ---- MXFP4, FP8 block, BF16 ------------------------------------------------------------
Matrix quantize_mxfp4(const float* w, int64_t rows, int64_t cols) {
  require_shape(rows, cols, kMxfp4Block, "MXFP4 quantization");
  Matrix m;
  m.format = MatrixFormat::kMXFP4;
  m.scale_kind = ScaleKind::kUe8m0;
  m.rows = rows;
  m.cols = cols;
  m.data.resize(static_cast<size_t>(rows * cols / 2));
  m.scales.resize(static_cast<size_t>(rows * cols / kMxfp4Block));
  // A block holding a NaN gets the NaN scale (the OCP MX rule; the checkpoint quantizer refuses
  // NaN before). Refused rather than stored: infinite weights, and finite ones so close to
  // FLT_MAX (>= ~2.98e38) that their nearest MXFP4 value (code 4 x 2^126 and up) is past fp32's
  // range, so any dequantization would turn them into infinities.
  const double limit = std::numeric_limits<float>::max();
  for (int64_t b = 0; b < rows * cols / kMxfp4Block; ++b) {
    const float* blk = w + b * kMxfp4Block;
    for (int i = 0; i < kMxfp4Block; ++i)
      if (std::isinf(blk[i]))
        throw std::invalid_argument("MXFP4 weight quantization: infinite weight at element " + std::to_string(b * kMxfp4Block + i));
    const uint8_t s = mxfp4_block_scale(block_amax(blk, kMxfp4Block));
    m.scales[static_cast<size_t>(b)] = s;
    uint8_t* packed = m.data.data() + b * (kMxfp4Block / 2);
    mxfp4_block_codes(blk, s, packed);
    if (s == kUe8m0NaN) continue;
    const double scale = std::ldexp(1.0, static_cast<int>(s) - 127);
    for (int i = 0; i < kMxfp4Block; ++i) {
      const uint8_t byte = packed[i / 2];
      const float code = e2m1_to_float(i % 2 ? e2m1_unpack_hi(byte) : e2m1_unpack_lo(byte));
      if (std::fabs(static_cast<double>(code) * scale) > limit) {
        char msg[192];
        std::snprintf(msg, sizeof msg,
                      "MXFP4 weight quantization: weight %g at element %lld is too large: its MXFP4 value %g x 2^%d overflows fp32",
                      static_cast<double>(blk[i]), static_cast<long long>(b * kMxfp4Block + i), static_cast<double>(code),
                      static_cast<int>(s) - 127);
        throw std::invalid_argument(msg);
      }
    }
  }
  return m;
}

Matrix quantize_fp8_block(const float* w, int64_t rows, int64_t cols, ScaleKind scale_kind) {
  if (scale_kind != ScaleKind::kF32 && scale_kind != ScaleKind::kUe8m0)
    throw std::invalid_argument("FP8 block quantization: scales must be f32 or ue8m0");
  require_shape(rows, cols, 1, "FP8 block quantization");
  Matrix m;
  m.format = MatrixFormat::kFP8Block;
  m.scale_kind = scale_kind;
  m.rows = rows;
  m.cols = cols;
  m.data.resize(static_cast<size_t>(rows * cols));
  const int64_t br = (rows + kFp8BlockRows - 1) / kFp8BlockRows, bc = matrix_scale_cols(m.format, cols);
  m.scales.resize(static_cast<size_t>(matrix_scale_bytes(m.format, scale_kind, rows, cols)));
  for (int64_t i = 0; i < br; ++i) {
    for (int64_t j = 0; j < bc; ++j) {
      const int64_t r0 = i * kFp8BlockRows, r1 = std::min(rows, r0 + kFp8BlockRows);
      const int64_t c0 = j * kFp8BlockCols, c1 = std::min(cols, c0 + kFp8BlockCols);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      float s;
      if (scale_kind == ScaleKind::kF32) {
        s = amax > 0.0f ? amax / kE4m3Max : 1.0f;
        std::memcpy(m.scales.data() + (i * bc + j) * 4, &s, 4);
      } else {
        const uint8_t code = amax > 0.0f ? ue8m0_ceil_from_float(amax / kE4m3Max) : 127;
        m.scales[static_cast<size_t>(i * bc + j)] = code;
        s = ue8m0_to_float(code);
      }
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) m.data[static_cast<size_t>(r * cols + c)] = e4m3_from_float_sat(w[r * cols + c] / s);
    }
  }
  return m;
}

Matrix make_bf16_matrix(const float* w, int64_t rows, int64_t cols) {
  require_shape(rows, cols, 1, "BF16 matrix");
  Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.data.resize(static_cast<size_t>(rows * cols * 2));
  for (int64_t i = 0; i < rows * cols; ++i) {
    const uint16_t h = bf16_from_float(w[i]);
    std::memcpy(m.data.data() + i * 2, &h, 2);
  }
  return m;
}

Matrix concat_rows(std::span<const Matrix* const> parts) {
  if (parts.empty()) throw std::invalid_argument("concat_rows: no parts");
  const Matrix& p0 = *parts[0];
  Matrix out;
  out.format = p0.format;
  out.scale_kind = p0.scale_kind;
  out.cols = p0.cols;
  out.ranges.clear();
  for (size_t i = 0; i < parts.size(); ++i) {
    const Matrix& p = *parts[i];
    validate_matrix(p.view());
    if (p.format != p0.format || p.scale_kind != p0.scale_kind || p.cols != p0.cols)
      throw std::invalid_argument("concat_rows: part " + std::to_string(i) + " (" + to_string(p.format) + " " +
                                  shape_str(p.rows, p.cols) + ") does not match part 0 (" + to_string(p0.format) +
                                  " " + shape_str(p0.rows, p0.cols) + ")");
    if (p.format == MatrixFormat::kFP8Block && i + 1 < parts.size() && p.rows % kFp8BlockRows != 0)
      throw std::invalid_argument("concat_rows: FP8-block part " + std::to_string(i) + " has " + std::to_string(p.rows) +
                                  " rows, not a multiple of 128");
    for (const OutputRange& r : p.ranges) out.ranges.push_back(OutputRange{out.rows + r.row_begin, r.global_scale});
    out.rows += p.rows;
    out.data.insert(out.data.end(), p.data.begin(), p.data.end());
    out.scales.insert(out.scales.end(), p.scales.begin(), p.scales.end());
  }
  return out;
}

// ---- 128x4 scale swizzle -------------------------------------------------------------------
int64_t swizzled_128x4_bytes(int64_t rows, int64_t scale_cols) {
  return swizzle_128x4_padded_rows(rows) * swizzle_128x4_padded_cols(scale_cols);
}

std::vector<uint8_t> swizzle_scales_128x4(const uint8_t* scales, int64_t rows, int64_t scale_cols) {
  const int64_t pc = swizzle_128x4_padded_cols(scale_cols);
  std::vector<uint8_t> out(static_cast<size_t>(swizzled_128x4_bytes(rows, scale_cols)), 0);
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t k = 0; k < scale_cols; ++k)
      out[static_cast<size_t>(swizzle_128x4_offset(m, k, pc))] = scales[m * scale_cols + k];
  return out;
}

std::vector<uint8_t> unswizzle_scales_128x4(const uint8_t* swizzled, int64_t rows, int64_t scale_cols) {
  const int64_t pc = swizzle_128x4_padded_cols(scale_cols);
  std::vector<uint8_t> out(static_cast<size_t>(rows * scale_cols));
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t k = 0; k < scale_cols; ++k)
      out[static_cast<size_t>(m * scale_cols + k)] = swizzled[swizzle_128x4_offset(m, k, pc)];
  return out;
}

// ---- compressed-tensors convention ---------------------------------------------------------
namespace {
float checked_reciprocal(float v, const char* what) {
  if (!is_normal_positive(v))
    throw std::invalid_argument(std::string(what) + " " + std::to_string(v) + " is not a positive, finite, normal number");
  const float r = 1.0f / v;
  if (!is_normal_positive(r)) throw std::invalid_argument(std::string(what) + ": its reciprocal is not a finite normal number");
  return r;
}
}  // namespace

float ct_global_scale_to_modelopt(float ct_global_scale) {
  return checked_reciprocal(ct_global_scale, "compressed-tensors global scale");
}
float modelopt_global_scale_to_ct(float weight_scale_2) { return checked_reciprocal(weight_scale_2, "weight_scale_2"); }

}  // namespace fp4moe
