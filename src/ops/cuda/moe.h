// The CUDA MoE layer: device routing (DeepSeek-V4 scored and hash, DeepSeek-V3 grouped,
// softmax top-k), dispatch with no host synchronization, grouped FP4 GEMMs (NVFP4 or MXFP4
// experts; gate|up with the clamped SwiGLU and each part's own global scale in the epilogue;
// down), the shared expert in the same call, and a combine in a fixed order; a one-token call
// runs everything after the router in one persistent kernel (the same bits). CPU reference:
// fp4moe::cpu::moe_route and moe_forward (ops/cpu/moe_ref.h); moe_kernels.h shows the data flow.
//
// Usage:
//   MoeLayer L = MoeLayer::create(spec);                      // allocates every slot
//   L.upload_expert(slot, gate_up, down);  ... L.upload_shared(gate_up, down);
//   L.set_expert_map(map); L.set_bias(bias);                  // global id -> slot or -1
//   MoeWorkspace ws = MoeWorkspace::create(L, max_tokens);
//   moe_forward(L, x, T, logits, token_ids, n_valid, out, ws, stream);
// The router logits (x . W_gate^T, a small dense GEMM) are the caller's input.
//
// CUDA graphs: moe_forward neither allocates nor synchronizes; its launch shapes depend on T
// (and the layer) only, everything data-dependent (ids, counts, offsets, tiles) is read from
// device memory. Capture it for a fixed T and replay with new contents of x / logits /
// token_ids. n_valid (optional device scalar) marks rows >= *n_valid as padding: they are
// routed nowhere, read no weights, and their output rows are zero. Stale or out-of-range ids
// (hash tables, padding) are dropped, never used as an index. Call create() (which raises
// the kernels' shared-memory limits) before capturing.
//
// Expert parallelism: the layer holds n_local expert slots; expert_map[global id] is a slot
// or -1 (absent: the pair contributes nothing on this device).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "formats/matrix.h"
#include "ops/cpu/moe_ref.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/moe_kernels.h"

namespace fp4moe::cuda {

struct MoeSpec {
  cpu::RouterParams router;      // n_experts = global experts (logits per token)
  MatrixFormat format = MatrixFormat::kNVFP4;  // of every expert (NVFP4 or MXFP4)
  int64_t hidden = 0, inter = 0;
  float swiglu_limit = 10.0f;
  int n_local = 0;               // local expert slots
  bool has_shared = false;       // one shared expert of the same shape, slot n_local
};

struct MoeLayer {
  MoeSpec spec;
  int slots = 0;  // n_local + has_shared
  int64_t gu_ktiles = 0, dn_ktiles = 0;
  int64_t gu_code_stride = 0, gu_scale_stride = 0, dn_code_stride = 0, dn_scale_stride = 0;
  DeviceBuffer gu_codes, gu_scales, dn_codes, dn_scales;  // slot-major, repacked (w4a16_layout.h)
  DeviceBuffer gu_gscale, dn_gscale;                      // [slots][2], [slots]
  DeviceBuffer expert_map;                                // [n_experts] int32
  DeviceBuffer bias;                                      // [n_experts] fp32 or empty
  DeviceBuffer tid2eid;                                   // [vocab, k] int32 (hash)

  static MoeLayer create(const MoeSpec& spec);  // validates; map = identity on [0, n_local)
  // Repacks and uploads one expert: gate_up [2I, H] (gate rows first; one global scale, or
  // two ranges split at row I), down [H, I] (one range).
  void upload_expert(int slot, const MatrixView& gate_up, const MatrixView& down);
  void upload_shared(const MatrixView& gate_up, const MatrixView& down);
  // The map, bias and table are updated in place once they exist, so a captured graph sees
  // later values; set the bias and the table before capturing a graph that routes with them
  // (their first call allocates the buffer the graph then needs).
  void set_expert_map(const std::vector<int32_t>& map);
  void set_bias(const std::vector<float>& bias);
  void set_tid2eid(const std::vector<int32_t>& table);  // [vocab, k], entries in [0, n_experts)
  // FP4 bytes (codes + scales) one slot's two GEMMs stream.
  int64_t slot_stream_bytes() const { return gu_code_stride + gu_scale_stride + dn_code_stride + dn_scale_stride; }
};

struct MoeWorkspace {
  int64_t max_tokens = 0;
  // The shape of the layer it was sized for: a call with another layer must not use it.
  int64_t top_k = 0, slots = 0, hidden = 0, inter = 0;
  bool has_shared = false;
  DeviceBuffer ids, weights;               // [T, k]
  DeviceBuffer chunk_counts, seg_off, tile_off, sorted_tok, pair_pos;
  DeviceBuffer h, y;                       // [P, I], [P, H] bf16
  DeviceBuffer tile_ready;                 // [P + S]: per tile, the gate|up items done (moe_stream.cuh)
  DeviceBuffer sync;                       // the single-token kernel's counters (zero between calls)
  DeviceBuffer gu_part;                    // its gate and up halves [k + 1, 2I] bf16
  cudaStream_t side = nullptr;             // the shared expert's stream when it runs beside the routed ones
  cudaEvent_t fork = nullptr, join = nullptr;
  static MoeWorkspace create(const MoeLayer& L, int64_t max_tokens);
  MoeWorkspace() = default;
  MoeWorkspace(MoeWorkspace&&) noexcept;
  MoeWorkspace& operator=(MoeWorkspace&&) = delete;
  ~MoeWorkspace();
};

// Token tiles (of 8) per grouped-GEMM CTA for a mean of pairs_per_slot tokens per expert.
// routed_stream16: the rule for routed slots whose 16-token tiles run the weight-streaming
// kernel for both GEMMs (tokens spread over the experts at random, so an expert near the mean
// often overflows a tile); false: the grouped-kernel rule, also used for the shared expert,
// whose T tokens fill its tiles exactly.
int moe_mtiles(int64_t pairs_per_slot, bool routed_stream16);

struct MoeOptions {
  std::optional<int> mtiles;  // pin the routed slots' token tiles (1, 2, 4, 8: tokens / 8; 12, 16: the 96- and 128-token wgmma kernels)
  // One-token calls run the single persistent kernel (moe_single_token.cu) when the layer
  // fits it and no tile size is pinned; false: the grouped path (the same bits).
  bool single_token = true;
  // Tiles of at most 8 tokens (the weight-streaming kernel, moe_stream.cuh): pin the tokens per
  // tile (1..8; default 4 while the experts average at most 1 pair, else 8) and the warps per
  // CTA (1..8; default from the occupancy). For comparisons: the bits do not depend on either.
  std::optional<int> stream_tokens;
  std::optional<int> stream_warps;
  // The streaming kernel at 8-token tiles: weight strips (16 output rows) per down work item
  // (1 or 2: one strip halves the item and its ring's registers) and gate|up's register ring
  // (1 or 2 chunks: one gives more warps per SM). Default: one strip and the ring that needs
  // fewer rounds of CTAs when one launch covers every slot (T <= 8 on the V4 layers), else 2
  // and 2. For comparisons: the same bits.
  std::optional<int> down_strips;
  std::optional<int> gate_up_ring;
  // 16-token tiles run the weight-streaming kernel for each GEMM whose 16-token stage fits its
  // shared memory (both GEMMs of both V4 layers: 16 x (7168 + 8) x 2 bytes is under the 227 KiB
  // limit), else the grouped kernel; false: the grouped kernel always (and moe_mtiles' rule for
  // the grouped kernel). For comparisons: the same bits.
  bool stream16 = true;
};

// The routed slots' token tiles (moe_mtiles' units) that a call of T tokens runs with these
// options; 0: the single-token kernel.
int moe_token_tiles(const MoeLayer& L, int64_t T, const MoeOptions& opt = {});

// Routing only: ws.ids / ws.weights.
void moe_route(const MoeLayer& L, const float* logits, int64_t T, const int32_t* token_ids, const int32_t* n_valid,
               MoeWorkspace& ws, cudaStream_t s);
// Dispatch of ws.ids (after moe_route): ws.seg_off, sorted_tok, pair_pos, tile_off.
void moe_dispatch(const MoeLayer& L, int64_t T, const int32_t* n_valid, MoeWorkspace& ws, cudaStream_t s,
                  const MoeOptions& opt = {});
// The whole layer: out [T, H] bf16 from x [T, H] bf16 and logits [T, n_experts] fp32.
void moe_forward(const MoeLayer& L, const __nv_bfloat16* x, int64_t T, const float* logits, const int32_t* token_ids,
                 const int32_t* n_valid, __nv_bfloat16* out, MoeWorkspace& ws, cudaStream_t s, const MoeOptions& opt = {});

}  // namespace fp4moe::cuda
