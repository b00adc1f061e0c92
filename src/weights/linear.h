// Checkpoint tensors -> canonical weights. A checkpoint stores each linear layer as a weight
// plus companions whose names and dtypes depend on the scheme:
//   ModelOpt NVFP4          M.weight U8 [N,K/2], M.weight_scale F8_E4M3 [N,K/16],
//                           M.weight_scale_2 F32 [], optional M.input_scale F32 []
//   compressed-tensors      M.weight_packed U8 [N,K/2], M.weight_scale F8_E4M3 [N,K/16],
//                           M.weight_global_scale F32 (= 1/weight_scale_2), M.input_global_scale
//   MXFP4 (DeepSeek/ModelOpt) M.weight U8|I8 [N,K/2], M.scale | M.weight_scale F8_E8M0|U8 [N,K/32]
//   FP8 128x128 block       M.weight F8_E4M3 [N,K], M.scale | M.weight_scale_inv F32|F8_E8M0
//                           [ceil(N/128), ceil(K/128)]
//   BF16                    M.weight BF16|F32 [N,K]
// scan_layout groups a checkpoint's tensors into such linear layers (anything else is a plain
// tensor), and load_matrix turns one into an fp4moe::Matrix, zero-copy up to the final copy
// into the Matrix. Fused projections load with load_fused, which keeps each part's global scale.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "formats/matrix.h"
#include "io/safetensors.h"

namespace fp4moe::weights {

struct LinearTensors {
  std::string module;  // the name without its suffix, as in the checkpoint
  MatrixFormat format = MatrixFormat::kBF16;
  ScaleKind scale_kind = ScaleKind::kNone;
  int64_t rows = 0, cols = 0;  // logical [N, K]
  std::optional<io::TensorRef> weight, scale, global_scale, input_scale;
  bool global_is_reciprocal = false;  // compressed-tensors weight_global_scale / input_global_scale
  bool input_is_reciprocal = false;
};

// A tensor that does not fit the layout it seems to belong to (a scale with no weight, a
// packed weight with no scale, a companion of the wrong dtype or shape).
struct LayoutProblem {
  std::string check;   // "missing-tensor", "extra-tensor", "scale-shape", "dtype"
  std::string tensor;
  std::string file;
  std::string message;
};

struct CheckpointLayout {
  std::vector<LinearTensors> linears;
  std::vector<io::TensorRef> plain;  // every tensor not part of a linear layer
  std::vector<LayoutProblem> problems;
  std::vector<io::TensorRef> broken;  // weights of layers that could not be assembled (see problems)
};

// The layout points into the checkpoint's mapped files: the checkpoint must outlive it.
CheckpointLayout scan_layout(const io::Checkpoint& ckpt);
CheckpointLayout scan_layout(const io::Checkpoint&& ckpt) = delete;

// Bytes of each tensor that makes up the linear, and what BF16 would take for [rows, cols].
int64_t linear_bytes(const LinearTensors& l);
inline int64_t linear_bf16_bytes(const LinearTensors& l) { return l.rows * l.cols * 2; }

// The global scale in ModelOpt's convention (weight_scale_2), or 1 for formats without one.
// Throws CheckpointError naming the tensor when it is missing or not a usable number.
float linear_global_scale(const LinearTensors& l);

// Copies a linear layer into a Matrix (validated). Throws CheckpointError naming the tensor.
Matrix load_matrix(const LinearTensors& l);
// A fused projection: parts stacked along rows, each keeping its own global scale.
Matrix load_fused(std::span<const LinearTensors* const> parts);

}  // namespace fp4moe::weights
