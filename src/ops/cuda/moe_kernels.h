// Raw launchers of the MoE kernels (moe_route.cu, moe_grouped_*.cu): device pointers, sizes
// and a stream in, a CUDA status out. No validation here; moe.h validates once, above.
//
// The data flow of one layer call (T tokens, k routed pairs per token, plus one shared pair
// when the layer has a shared expert: Kp = k or k + 1 pairs per token, P = T * Kp):
//   route     logits [T, E] -> ids [T, k] (global expert ids, -1 = dropped), weights [T, k]
//   count     pair p = t*Kp + j -> slot (expert map; the shared pair -> the last slot);
//             per chunk of pairs, a histogram per slot
//   scan      chunk offsets per slot, segment offsets seg_off[S+1], tile offsets tile_off[S+1]
//   scatter   pair p -> position pos in its slot's segment (pairs keep their order inside a
//             segment: deterministic); sorted_tok[pos] = t, pair_pos[p] = pos (or -1)
//   gate|up   grouped GEMM over segments (x rows gathered through sorted_tok), clamped SwiGLU
//             in the epilogue -> h [P, I] in segment order
//   down      grouped GEMM over the same segments -> y [P, H] in segment order
//   combine   out[t] = rd(rd(sum_j y[pair_pos[t, j]] * w[t, j]) + y[shared pos of t])
// One token (T = 1): route, then moe_single_token.cu does gate|up, down and the combine in one
// persistent kernel, with the same bits and no dispatch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fp4moe::cuda {

enum class MoeRouterKind : uint8_t { kV4Scored, kV4Hash, kV3Grouped, kSoftmax };  // as cpu::RouterKind

inline constexpr int kMoeMaxExperts = 512;     // router: 16 experts per lane of a warp
inline constexpr int kMoeMaxTopK = 16;         // as cpu::validate_router
inline constexpr int kMoeMaxSlots = 1024;      // dispatch: one thread per slot in the scan
inline constexpr int kMoeDispatchChunk = 2048; // pairs per histogram chunk
inline constexpr int kMoeWgmmaTiles = 16;       // mtiles of the wgmma kernels' 128-token tiles
inline constexpr int kMoeWgmmaTilesSmall = 12;  // ... and of their 96-token tiles
inline constexpr bool moe_is_wgmma(int mtiles) { return mtiles == kMoeWgmmaTiles || mtiles == kMoeWgmmaTilesSmall; }

// Programmatic dependent launch (pdl): the kernel may start while the previous kernel of the
// stream finishes; every MoE kernel waits (griddepcontrol.wait) before it reads what an
// earlier kernel wrote. Only set where the previous operation of the stream is a kernel.
template <typename... Params, typename... Args>
cudaError_t moe_launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, bool pdl,
                       Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}
#ifdef __CUDACC__
__device__ __forceinline__ void moe_pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void moe_pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }
// A counter another CTA raises after its stores (__threadfence, then atomicAdd): an acquire load.
__device__ __forceinline__ int moe_ld_acquire(const int32_t* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// Fetch-and-add, acquire and release at device scope: what the thread did before is visible to
// whoever reads the new value with an acquire, and what it does after sees what they did before.
__device__ __forceinline__ int moe_atom_add_acq_rel(int32_t* p, int v) {
  int old;
  asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;\n" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}
// The combine's roundings, shared by the combine kernel and the one-token kernel: the routed
// rows summed in fp32 in routing order (moe_combine_step from acc = 0), rounded to bf16, then
// the shared row added and rounded again (moe_combine_finish).
__device__ __forceinline__ float moe_combine_step(float acc, float y, float w) { return __fadd_rn(acc, __fmul_rn(y, w)); }
__device__ __forceinline__ __nv_bfloat16 moe_combine_finish(float acc, bool has_shared, float shared_y) {
  float r = __bfloat162float(__float2bfloat16_rn(acc));
  if (has_shared) r = __fadd_rn(r, shared_y);
  return __float2bfloat16_rn(r);
}
// The slot that owns grouped-GEMM tile `tile`: the largest e in [begin, end) with
// tile_off[e] <= tile (empty slots share offsets). The offsets come from an earlier kernel:
// read through L2.
__device__ __forceinline__ int moe_tile_slot(const int32_t* tile_off, int begin, int end, int64_t tile) {
  int lo = begin, hi = end - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (__ldcg(tile_off + mid) <= tile) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
#endif

struct MoeRouteArgs {
  MoeRouterKind kind = MoeRouterKind::kV4Scored;
  int n_experts = 0, top_k = 0, n_group = 1, topk_group = 1;
  bool renormalize = true, round_bf16 = true;
  float routed_scaling_factor = 1.0f;
  int64_t vocab = 0;
  const float* logits = nullptr;     // [T, E]
  const float* bias = nullptr;       // [E] or null
  const int32_t* token_ids = nullptr;  // hash: [T]
  const int32_t* tid2eid = nullptr;    // hash: [vocab, k]
  const int32_t* n_valid = nullptr;    // device scalar or null: rows >= *n_valid are padding
  int64_t T = 0;
  int32_t* ids = nullptr;    // [T, k]
  float* weights = nullptr;  // [T, k]
  bool pdl = false;
};
cudaError_t launch_moe_route(const MoeRouteArgs& a, cudaStream_t s);

struct MoeDispatchArgs {
  const int32_t* ids = nullptr;  // [T, k] global ids
  int64_t T = 0;
  int k = 0, kp = 0;             // routed pairs per token, pairs per token (k + shared)
  const int32_t* expert_map = nullptr;  // [n_global] -> slot or -1
  int n_global = 0;
  int slots = 0;                 // S: local experts + shared
  int shared_slot = -1;
  const int32_t* n_valid = nullptr;
  int tile_tokens = 8;           // tokens per GEMM tile (routed slots)
  int shared_tile_tokens = 8;    // tokens per GEMM tile of the shared slot
  int32_t* chunk_counts = nullptr;  // [nchunks, S]
  int32_t* seg_off = nullptr;       // [S + 1]
  int32_t* tile_off = nullptr;      // [S + 1]
  int32_t* sorted_tok = nullptr;    // [P]
  int32_t* pair_pos = nullptr;      // [P]
  int32_t* tile_ready = nullptr;    // [tiles] or null: zeroed for the weight-streaming kernels' handoff
  bool pdl = false;
};
inline int64_t moe_dispatch_chunks(int64_t pairs) { return (pairs + kMoeDispatchChunk - 1) / kMoeDispatchChunk; }
cudaError_t launch_moe_dispatch(const MoeDispatchArgs& a, cudaStream_t s);

struct MoeGroupedArgs {
  bool nvfp4 = true;
  const uint8_t* codes = nullptr;   // slot-major: slot e at codes + e * code_stride (w4a16_layout.h tiles)
  const uint8_t* scales = nullptr;
  int64_t code_stride = 0, scale_stride = 0;
  int64_t ktiles = 0;
  const float* gscale = nullptr;    // gate|up: [S][2] (gate, up); down: [S]
  int64_t n = 0, k = 0;             // weight rows and cols: gate|up 2I x H, down H x I
  int64_t inter = 0;                // gate|up: I
  float swiglu_limit = 0.0f;
  const __nv_bfloat16* x = nullptr;   // gate|up: tokens [T, H] (gathered by sorted_tok); down: h [P, I]
  const int32_t* sorted_tok = nullptr;
  __nv_bfloat16* y = nullptr;         // gate|up: h [P, I]; down: y [P, H]
  const int32_t* seg_off = nullptr;
  const int32_t* tile_off = nullptr;
  int slot_begin = 0, slot_end = 0; // the slots this launch covers (tile_off[slot_begin] is its first tile)
  int64_t max_tiles = 0;            // grid bound on the number of tiles
  int mtiles = 1;                   // tokens per tile / 8: 1, 2, 4, 8 (moe_grouped.cuh), 12, 16 (moe_grouped_wgmma.cu)
  int tile_tokens = 8;              // tokens per tile as dispatched (8 * mtiles; min(8, T) when mtiles == 1)
  int sms = 0;                      // multiprocessors of the device (grid shape of the decode kernel)
  int stream_warps = 0;             // streaming kernel: warps per CTA (1..8, 1..12 at 16 tokens); 0: from the occupancy
  // Streaming kernel at 8-token tiles (moe_stream.cuh, launch_stream): weight strips (16 rows)
  // per down item, 1 or 2, and gate|up's register ring, 1 or 2 chunks; 0: automatic.
  int down_strips = 0;
  int gate_up_ring = 0;
  // mtiles == 2 (16-token tiles): the weight-streaming kernel (moe_stream.cuh) where its stage
  // (16 x (k + 8) bf16) fits, else the grouped kernel; false: always the grouped kernel (same bits).
  bool stream16 = true;
  // mtiles == 1: per tile of the call, the gate|up items whose h rows are stored (zeroed by the
  // dispatch); down starts a tile once all of its items are counted. Null: down waits for the
  // whole gate|up kernel (griddepcontrol.wait).
  int32_t* tile_ready = nullptr;
  bool pdl = false;                 // programmatic dependent launch after the previous kernel of the stream
};
#ifdef __CUDACC__
// The rows of grouped-GEMM tile t of a launch (t counts from the launch's first tile), tt
// tokens per tile: its slot, its first position in the segment order (h / y rows) and its row
// count, from the dispatch's offsets (read through L2: an earlier kernel wrote them). false:
// past the last real tile (uniform per CTA).
struct MoeTileRef {
  int64_t tile;  // the tile's index in the call (tile_off's numbering)
  int e;
  int64_t row0;
  int rows;
};
__device__ __forceinline__ bool moe_find_tile(const MoeGroupedArgs& a, int64_t t, int tt, MoeTileRef& r) {
  const int64_t tile = __ldcg(a.tile_off + a.slot_begin) + t;
  if (tile >= __ldcg(a.tile_off + a.slot_end)) return false;
  r.tile = tile;
  r.e = moe_tile_slot(a.tile_off, a.slot_begin, a.slot_end, tile);
  r.row0 = __ldcg(a.seg_off + r.e) + (tile - __ldcg(a.tile_off + r.e)) * tt;
  r.rows = static_cast<int>(min(static_cast<int64_t>(tt), static_cast<int64_t>(__ldcg(a.seg_off + r.e + 1)) - r.row0));
  return true;
}
// The activation row (of a.x) behind row i of tile r: gate|up gathers tokens through
// sorted_tok, down reads h in segment order.
__device__ __forceinline__ int64_t moe_src_row(const MoeGroupedArgs& a, const MoeTileRef& r, int i) {
  return a.sorted_tok ? static_cast<int64_t>(a.sorted_tok[r.row0 + i]) : r.row0 + i;
}
#endif
// Tiles of at most 8 tokens (mtiles == 1), and 16-token tiles where they fit, run the
// weight-streaming kernel (moe_stream.cuh), which stages the tile's rows for all of k: it needs
// tile_tokens * (k + 8) * 2 bytes of shared memory, at most the 227 KB one CTA may have. The
// planner (moe.cu) and the launch (moe_stream.cuh, moe_grouped.cuh) both ask these two.
inline constexpr int64_t kMoeStreamMaxSmem = 232448;
inline int64_t moe_stream_stage_bytes(int64_t k, int tile_tokens) { return static_cast<int64_t>(tile_tokens) * (k + 8) * 2; }
inline bool moe_stream_stage_fits(int64_t k, int tile_tokens) { return moe_stream_stage_bytes(k, tile_tokens) <= kMoeStreamMaxSmem; }
// Row blocks per tile: gate|up I/64 (64 gate + 64 up rows), down ceil(H/128); the wgmma
// kernels: gate|up ceil(I/128) (128 gate + 128 up rows), down ceil(H/256).
cudaError_t launch_moe_gate_up(const MoeGroupedArgs& a, cudaStream_t s);
cudaError_t launch_moe_down(const MoeGroupedArgs& a, cudaStream_t s);
// Raises the dynamic shared-memory limit of every instantiation (call before any capture).
cudaError_t moe_prepare_kernels();
cudaError_t moe_prepare_gate_up();  // the two halves of moe_prepare_kernels, one per .cu
cudaError_t moe_prepare_down();
// The many-tokens kernels (moe_is_wgmma(mtiles)), called by the two launchers above.
cudaError_t launch_moe_wgmma(const MoeGroupedArgs& a, bool gate_up, cudaStream_t s);
cudaError_t moe_prepare_wgmma();

// One token after its router (moe_single_token.cu): every GEMM and the combine in one
// persistent kernel, no dispatch. Pairs run in the order: shared expert, then the routed pairs
// that map to a slot, in routing order (h and y rows in that order).
struct MoeSingleArgs {
  bool nvfp4 = true;
  const uint8_t *gu_codes = nullptr, *gu_scales = nullptr, *dn_codes = nullptr, *dn_scales = nullptr;
  int64_t gu_code_stride = 0, gu_scale_stride = 0, dn_code_stride = 0, dn_scale_stride = 0;
  int64_t gu_ktiles = 0, dn_ktiles = 0;
  const float* gu_gscale = nullptr;  // [S][2]
  const float* dn_gscale = nullptr;  // [S]
  int64_t hidden = 0, inter = 0;
  float swiglu_limit = 0.0f;
  const __nv_bfloat16* x = nullptr;  // [H]
  const int32_t* ids = nullptr;      // [k] from the router
  const float* weights = nullptr;    // [k]
  int k = 0;
  const int32_t* expert_map = nullptr;  // [n_global] -> slot or -1
  int n_global = 0;
  int shared_slot = -1;              // -1: no shared expert
  const int32_t* n_valid = nullptr;  // device scalar or null: *n_valid == 0 makes the token padding
  __nv_bfloat16* gu_part = nullptr;  // [k + 1, 2I]: gate and up halves before the SwiGLU
  __nv_bfloat16* h = nullptr;        // [k + 1, I]
  __nv_bfloat16* y = nullptr;        // [k + 1, H]
  __nv_bfloat16* out = nullptr;      // [H]
  int32_t* sync = nullptr;           // moe_single_sync_ints(H) counters, zero between calls
  int sms = 0;                       // CTAs: one per multiprocessor
  bool pdl = false;
  int gu_warps = 0;                  // set by launch_moe_single
};
int64_t moe_single_sync_ints(int64_t hidden, int64_t inter);
int64_t moe_single_smem_bytes(int64_t hidden, int64_t inter);  // dynamic shared memory of one CTA
cudaError_t launch_moe_single(const MoeSingleArgs& a, cudaStream_t s);
cudaError_t moe_prepare_single();

struct MoeCombineArgs {
  const __nv_bfloat16* y = nullptr;  // [P, H]
  const int32_t* pair_pos = nullptr; // [T, kp]
  const float* weights = nullptr;    // [T, k]
  int k = 0, kp = 0;
  bool has_shared = false;
  int64_t T = 0, H = 0;
  __nv_bfloat16* out = nullptr;      // [T, H]
  bool pdl = false;
};
cudaError_t launch_moe_combine(const MoeCombineArgs& a, cudaStream_t s);

}  // namespace fp4moe::cuda
