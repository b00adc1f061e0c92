// A deterministic tiny DeepSeek-V4: small enough for tests and the CPU, yet covering every
// path of the forward: layers of all three attention types (sliding, CSA with its indexer,
// HCA), both MoE kinds (hash and scored), and windows short enough that a few dozen tokens
// pass the sliding window and close several compression windows.
//
// Weights are drawn from a seeded mt19937_64 with magnitudes that keep activations O(1), and
// stored as a checkpoint would store them: linears and norms bf16, mHC parameters, sinks,
// position biases and router bias fp32, tid2eid integer. Names are the ones transformers'
// save_pretrained writes (see weights.h).
#pragma once

#include <cstdint>
#include <filesystem>

#include "model/config.h"
#include "model/weight_source.h"

namespace fp4moe::model {

// Layers: sliding / CSA / HCA / CSA; the first is hash-routed, the rest scored.
V4Config tiny_v4_config();
InMemoryWeights make_tiny_weights(const V4Config& c, uint64_t seed);

// Writes config.json + model.safetensors (BF16 linears and norms; F32 mHC parameters, sinks,
// position biases, router bias; I64 tid2eid) to dir, creating it. Needs fp4moe_io.
struct TinyCheckpointInfo {
  V4Config config;
  int64_t tensors = 0;
  int64_t bytes = 0;
};
TinyCheckpointInfo write_tiny_checkpoint(const std::filesystem::path& dir, uint64_t seed);

}  // namespace fp4moe::model
