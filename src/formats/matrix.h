// A weight matrix in one of the formats fp4moe computes with, as the ops see it: a [rows, cols]
// matrix W of a linear layer y = x . W^T (rows = output features N, cols = input features K),
// stored as codes plus block scales plus one fp32 global scale per output range.
//
// Output ranges exist for fused projections (gate|up, q_a|kv): each part keeps its own global
// scale (ModelOpt's weight_scale_2), applied to its rows in fp32 after accumulation. Sharing one
// global scale across parts is a known silent-error class; this type makes it unnecessary.
//
// Layouts (row-major everywhere, K fastest):
//   kBF16     data: bf16 [rows, cols]                          scales: none
//   kNVFP4    data: e2m1 x2 [rows, cols/2] (low nibble first)  scales: e4m3 [rows, cols/16]
//   kMXFP4    data: e2m1 x2 [rows, cols/2]                     scales: ue8m0 [rows, cols/32]
//   kFP8Block data: e4m3 [rows, cols]                          scales: fp32 or ue8m0
//                                                              [ceil(rows/128), ceil(cols/128)]
// Matrix owns the bytes; MatrixView is the non-owning handle that ops and kernels take.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fp4moe {

enum class MatrixFormat : uint8_t { kBF16, kNVFP4, kMXFP4, kFP8Block };
enum class ScaleKind : uint8_t { kNone, kE4m3, kUe8m0, kF32 };

const char* to_string(MatrixFormat f);
const char* to_string(ScaleKind s);

// Rows [row_begin, next range's row_begin) use global_scale.
struct OutputRange {
  int64_t row_begin = 0;
  float global_scale = 1.0f;
};

struct MatrixView {
  MatrixFormat format = MatrixFormat::kBF16;
  ScaleKind scale_kind = ScaleKind::kNone;
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;
  const uint8_t* scales = nullptr;
  const OutputRange* ranges = nullptr;
  int32_t num_ranges = 0;
};

// Bytes of codes and of scales for a matrix of this format and shape.
int64_t matrix_data_bytes(MatrixFormat f, int64_t rows, int64_t cols);
int64_t matrix_scale_bytes(MatrixFormat f, ScaleKind s, int64_t rows, int64_t cols);
// Scale columns per row (NVFP4: cols/16, MXFP4: cols/32, FP8 block: ceil(cols/128)).
int64_t matrix_scale_cols(MatrixFormat f, int64_t cols);
// Global scale of a row (ranges are sorted by row_begin; the first starts at row 0).
float matrix_row_global_scale(const MatrixView& w, int64_t row);

// Throws std::invalid_argument naming what is wrong (shape not divisible by the block,
// missing buffers, ranges not covering the rows in order, scale kind not valid for the format).
void validate_matrix(const MatrixView& w);
// What one stored block scale is (p: its bytes, 4 for kF32), for the checks that refuse or report
// them (the doctor, matrix_bad_value): -0 counts as zero; denormal: under the smallest normal
// value of its kind (e4m3 2^-6, fp32 2^-126; ue8m0 has none, and no sign, zero or infinity).
enum class BlockScaleClass : uint8_t { kNormal, kDenormal, kZero, kNegative, kInfinite, kNaN };
BlockScaleClass classify_block_scale(ScaleKind kind, const uint8_t* p);
float block_scale_value(ScaleKind kind, const uint8_t* p);  // its value (ue8m0 0xFF: NaN; kNone: 1)
int block_scale_bytes(ScaleKind kind);  // 4 for kF32, 1 for e4m3 and ue8m0, 0 for kNone

// The first stored value that would make a layer's outputs wrong, with its position and the
// consequence ("" when there is none): a NaN block scale (e4m3 0x7F / 0xFF, ue8m0 0xFF), a
// non-finite fp32 block scale, a NaN e4m3 or non-finite bf16 weight (NaN outputs), a negative
// block scale (quantizers write none; the sign of its weights would flip; -0 is a zero scale),
// an FP4 or FP8-block weight whose code x block scale x global scale overflows fp32 (ue8m0 2^126 x
// code 4, an NVFP4 global scale above ~1.3e35).
// One pass over the bytes; a loader calls it once per matrix (validate_matrix, which the ops
// call, checks the structure only).
std::string matrix_bad_value(const MatrixView& w);

struct Matrix {
  MatrixFormat format = MatrixFormat::kBF16;
  ScaleKind scale_kind = ScaleKind::kNone;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> data;
  std::vector<uint8_t> scales;
  std::vector<OutputRange> ranges{OutputRange{}};

  MatrixView view() const {
    return MatrixView{format, scale_kind, rows, cols, data.data(), scales.empty() ? nullptr : scales.data(),
                      ranges.data(), static_cast<int32_t>(ranges.size())};
  }
  int64_t total_bytes() const {
    return static_cast<int64_t>(data.size() + scales.size() + ranges.size() * sizeof(float));
  }
};

}  // namespace fp4moe
