// BF16 checkpoint -> NVFP4 or MXFP4 checkpoint in ModelOpt's layout, tensor by tensor.
//
// Quantized linear layers become
//   NVFP4: M.weight U8 [N,K/2], M.weight_scale F8_E4M3 [N,K/16], M.weight_scale_2 F32 []
//   MXFP4: M.weight U8 [N,K/2], M.weight_scale F8_E8M0 [N,K/32]
// through formats/quantize.h (byte-exact with ModelOpt for NVFP4). Which layers: every 2-D
// BF16/F32 linear weight except embeddings, the LM head and the MoE router, or with
// experts_only the routed experts alone. Everything else is written unchanged, except
// unquantized F32 linear weights, which are written as BF16. Experts stacked the way
// transformers holds them in memory (mlp.experts.gate_up_proj [E, 2I, H], down_proj [E, H, I])
// are split and written per expert (mlp.experts.E.gate_proj / up_proj / down_proj). The output
// folder gets the
// shards (model.safetensors, or model-0000i-of-0000n.safetensors plus the index),
// hf_quant_config.json, config.json with a quantization_config, and copies of the other
// small files (tokenizer, generation config).
//
// Memory stays bounded by the largest single tensor: the output plan (names, dtypes, shapes)
// is computed from the input headers, each shard's header is written first, and tensors are
// quantized and streamed one at a time.
//
// Refused, with a CheckpointError naming the file and tensor: a NaN or infinity in any
// floating-point tensor written (quantized, converted to BF16, or copied as BF16, F32 or
// F8_E4M3; integer tensors such as tid2eid are not checked), with its element index, and an F32 value that overflows BF16
// when its tensor is converted; a run that would quantize no layer (say experts_only on a
// checkpoint without routed experts), whose quantization config would claim a scheme no layer
// has; an output folder that exists and is not empty. Output goes to the staging folder
// OUT/.fp4moe-quantize.partial and moves into OUT only once complete, config.json last: a
// failed run removes everything it wrote (and OUT, if it created it). An interrupted one leaves
// the staging folder (killed while moving files out of it, some of those beside it), never a
// config.json without its shards; a rerun names the staging folder. An OUT that is a dangling
// symlink is refused, and no file that appears in OUT during the run is replaced.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace fp4moe::weights {

enum class TargetScheme : uint8_t { kNVFP4, kMXFP4 };

struct QuantizeCheckpointOptions {
  TargetScheme scheme = TargetScheme::kNVFP4;
  bool experts_only = false;
  uint64_t shard_bytes = 4ull << 30;  // a new shard starts once a shard would exceed this
  std::string producer_version = "dev";
};

struct QuantizeCheckpointResult {
  int64_t quantized = 0;  // linear layers quantized
  int64_t kept = 0;       // tensors written unchanged (or as BF16)
  std::vector<std::string> shards;
  std::vector<std::string> excluded;  // linear modules left unquantized (hf_quant_config exclude_modules)
  uint64_t bytes_in = 0, bytes_out = 0;
};

// progress(done_input_bytes, total_input_bytes). Throws CheckpointError on unusable input
// (an already-quantized or F16 layer, a NaN or infinite value, nothing to quantize), naming
// the tensor, and on an unusable out_dir; out_dir is then as it was before the call.
QuantizeCheckpointResult quantize_checkpoint(const io::Checkpoint& in, const std::filesystem::path& out_dir,
                                             const QuantizeCheckpointOptions& opt,
                                             const std::function<void(uint64_t, uint64_t)>& progress = {});

// The staging folder inside the output folder (see above).
inline constexpr const char* kQuantizeStagingDir = ".fp4moe-quantize.partial";

// Why out_dir cannot take a quantized checkpoint ("output folder exists and is not empty", or
// that it holds only the staging folder of an interrupted run), or "" if it is absent or empty.
std::string output_folder_problem(const std::filesystem::path& out_dir);

}  // namespace fp4moe::weights
