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
// (an already-quantized or F16 layer, a NaN weight), naming the tensor.
QuantizeCheckpointResult quantize_checkpoint(const io::Checkpoint& in, const std::filesystem::path& out_dir,
                                             const QuantizeCheckpointOptions& opt,
                                             const std::function<void(uint64_t, uint64_t)>& progress = {});

}  // namespace fp4moe::weights
