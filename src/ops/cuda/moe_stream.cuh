// The grouped MoE GEMM for tiles of at most 8 tokens (decode: few tokens per expert), and of
// 9..16 tokens where their stage fits (NT = 2 token groups: ldmatrix .x4 and two mma per strip
// and k16 step on the same A fragment), a weight-streaming kernel with no barrier in its k loop:
//   - One warp = one work item over all of k: gate|up: 16 intermediate columns (the gate strip
//     and the matching up strip, 2 x 16 weight rows sharing each activation fragment, so the
//     SwiGLU epilogue is warp-local); down: NS strips (NS = 2: 32 output rows; NS = 1, 8-token
//     tiles only: 16 rows, half the ring's registers and half the item, so more warps per SM
//     and a shorter tail; MoeGroupedArgs::down_strips picks it).
//   - A CTA = W warps = W items of ONE tile; W is the narrowest width in 4..8 (4..12 at NT = 2)
//     that keeps the most warps resident per SM for the tile's stage size, halved while the grid
//     would not cover the SMs; the tile is found from blockIdx (moe_find_tile), and its activation
//     rows (at most tile_tokens <= 8 NT, the dispatch's tile size) are staged ONCE into shared memory for all
//     of k (tile_tokens x (K + 8) bf16), then one __syncthreads, then each warp streams on
//     its own: a ring of 2 register chunks of 4 k-tiles x 2 strips (up to 9.2 KB of weights
//     in flight per warp), 16-byte evict-first loads, a chunk refilled as soon as consumed
//     (8-token gate|up may run a ring of 1 chunk: fewer registers, more warps per SM).
//   - Token columns past the tile's rows read row 0 of the stage (ldmatrix row addresses are
//     per lane): their products are never written.
//   - Scales: one byte permute + one multiply-add per two bf16 scale pairs, applied by the
//     bf16x2 multiply's half broadcast; codes: w4_dequant_word (w4a16_layout.h: 9 integer ops
//     per code word, split between the integer ALU and the FMA pipe).
//   - The A fragments, the k order (k-tiles ascending, k16 steps ascending, one mma.sync
//     chain per output) and the epilogue roundings are those of moe_grouped.cuh: the same
//     bits for every token whatever its tile (batch invariance).
//   - Programmatic dependent launch: gate|up waits (griddepcontrol.wait) before it reads what
//     the dispatch wrote, and lets its dependent launch at once. down reads the dispatch's tile
//     offsets (two kernels back, complete by then) through L2 and issues its first weight chunks,
//     then waits only for ITS tile's h rows: every gate|up warp counts its item in the tile's
//     counter (tile_ready, zeroed by the dispatch) once its rows are stored, so down CTAs that
//     start in gate|up's tail multiply tiles finished long before instead of waiting for the
//     whole kernel (no deadlock: the dependent launch comes after every gate|up CTA has started).
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <mutex>
#include <type_traits>
#include <vector>

#include "ops/cuda/moe_kernels.h"
#include "ops/cuda/w4a16_common.cuh"

namespace fp4moe::cuda::moe_detail {

using detail::cp_async16;
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::a_fragment_fast;
using detail::mma_bf16;
using detail::tile_scales;

constexpr int kStreamMaxWarps = 8;
// Tiles of 9..16 tokens (two token groups): a 16-token stage of V4-Flash gate|up (131 KB) leaves
// one CTA per SM, so these CTAs may be up to 12 warps wide.
constexpr int kStream16MaxWarps = 12;
template <int NT>
constexpr int stream_max_warps() { return NT == 1 ? kStreamMaxWarps : kStream16MaxWarps; }
// 2 chunks of 4 k-tiles x 2 strips: 4.6-9.2 KB of weights in flight per warp at ~150
// registers, 13 warps per SM. Measured on H100 against 3 chunks of 4 (~205-240 registers,
// 8-9 warps per SM), 3 of 2 and 4 of 2: the most warps per SM won, up to the point where a
// chunk shrank to 2 k-tiles (V4-Flash T=8 267 us against 304, 294, 283). On the H200, 3 chunks of
// 2 (128 registers, 16 warps per SM) and registers capped at 128 or 136 also lost (notes step 29).
constexpr int kStreamChunk = 4;  // k-tiles per register chunk
constexpr int kStreamRing = 2;   // chunks in the ring


// One warp's stream of NS weight strips (1 or 2) of one slot over all of k: a register ring
// of R chunks of kStreamChunk k-tiles (16-byte evict-first loads), a chunk refilled as soon
// as it is consumed; each k16 step reads its activation fragment by ldmatrix from shared
// memory and runs one mma.sync per strip. start() issues the first chunks (so a caller may
// wait for its activations afterwards), run() multiplies all of k.
template <bool NV, int NS = 2, int R = kStreamRing>
struct StripRing {
  static constexpr int kC = kStreamChunk;
  static constexpr int kSB = NV ? kNvScaleBytesPerTile : kMxScaleBytesPerTile;
  const uint8_t* pc[NS];  // the next chunk of each strip (immediate offsets inside a chunk)
  const uint8_t* ps[NS];
  int load_left;          // k-tiles not yet loaded
  int todo;               // k-tiles not yet multiplied
  uint4 cr[R][kC][NS];
  uint2 sr[R][kC][NS];

  // codes / scales: the slot's matrix; strips[i]: strip i's index; active == false loads nothing.
  __device__ __forceinline__ void start(const uint8_t* codes, const uint8_t* scales, int64_t ktiles,
                                        const int64_t (&strips)[NS], int lane, bool active) {
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      pc[j] = codes + strips[j] * ktiles * kTileCodeBytes + lane * 16;
      ps[j] = scales + strips[j] * ktiles * kSB + (lane >> 2) * (kSB / 8);
    }
    load_left = active ? static_cast<int>(ktiles) : 0;
    todo = static_cast<int>(ktiles);
#pragma unroll
    for (int r = 0; r < R; ++r) load_chunk(cr[r], sr[r]);
  }

  __device__ __forceinline__ void load_tile(const uint8_t* pcj, const uint8_t* psj, int i, uint4& c, uint2& s) {
    c = __ldcs(reinterpret_cast<const uint4*>(pcj + i * kTileCodeBytes));
    if constexpr (NV) {
      s = __ldcs(reinterpret_cast<const uint2*>(psj + i * kSB));
    } else {
      s.x = __ldcs(reinterpret_cast<const uint32_t*>(psj + i * kSB));
      s.y = 0;
    }
  }
  __device__ __forceinline__ void load_chunk(uint4 (&c)[kC][NS], uint2 (&s)[kC][NS]) {
#pragma unroll
    for (int i = 0; i < kC; ++i) {
      if (i < load_left) {
#pragma unroll
        for (int j = 0; j < NS; ++j) load_tile(pc[j], ps[j], i, c[i][j], s[i][j]);
      }
    }
#pragma unroll
    for (int j = 0; j < NS; ++j) pc[j] += kC * kTileCodeBytes, ps[j] += kC * kSB;
    load_left -= kC;
  }

  // xk: shared address of this lane's ldmatrix row at k = 0 (NT = 1: token lane % 8, k half
  // (lane / 8) % 2, and lanes 16..31 16 k further on; NT = 2: token lane % 8 + 8 (lane / 16), the
  // same k half). acc[j][t]: strip j, token group t (tokens 8t..8t+7), zero on entry. Both groups
  // multiply the same A fragment: each output is the same mma chain whatever NT.
  // NT = 1 reads a k-tile's activation fragments with two ldmatrix .x4 (two k16 steps each):
  // half the ldmatrix instructions of one .x2 per step, ~1% at T = 1 and 8 (notes step 54).
  template <int NT>
  __device__ __forceinline__ void run(unsigned xk, float (&acc)[NS][NT][4]) {
    static_assert(NT == 1 || NT == 2, "8 or 16 tokens per tile");
    auto load_b1 = [&](unsigned addr, uint32_t (&b)[8]) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                   : "r"(addr));
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(b[4]), "=r"(b[5]), "=r"(b[6]), "=r"(b[7])
                   : "r"(addr + 64));
    };
    auto compute_chunk = [&](const uint4 (&c)[kC][NS], const uint2 (&s)[kC][NS]) {
#pragma unroll
      for (int i = 0; i < kC; ++i) {
        if (i >= todo) break;  // uniform; K is a multiple of 64, so every k16 step of a tile is real
        uint32_t sw[NS][4];
#pragma unroll
        for (int j = 0; j < NS; ++j) tile_scales<NV>(s[i][j], sw[j]);
        uint32_t b1[8];  // NT = 1: the k-tile's four fragments (two per ldmatrix .x4)
        if constexpr (NT == 1) load_b1(xk + i * kTileK * 2, b1);
        auto step = [&](auto jc) {
          constexpr int J = decltype(jc)::value;
          uint32_t b[2 * NT], af[4];
          if constexpr (NT == 1) {
            b[0] = b1[2 * J], b[1] = b1[2 * J + 1];
          } else {
            asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                         : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                         : "r"(xk + i * kTileK * 2 + J * 32));
          }
#pragma unroll
          for (int j = 0; j < NS; ++j) {
            a_fragment_fast<NV, J>(c[i][j], sw[j], af);
#pragma unroll
            for (int t = 0; t < NT; ++t) mma_bf16(acc[j][t], af, b[2 * t], b[2 * t + 1]);
          }
        };
        step(std::integral_constant<int, 0>{});
        step(std::integral_constant<int, 1>{});
        step(std::integral_constant<int, 2>{});
        step(std::integral_constant<int, 3>{});
      }
      xk += kC * kTileK * 2;
      todo -= kC;
    };
    while (todo > 0) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (todo > 0) {
          compute_chunk(cr[r], sr[r]);
          load_chunk(cr[r], sr[r]);
        }
      }
    }
  }
};

// The clamped SwiGLU of one intermediate column from its gate and up values (each already
// rounded to bf16, as the linear's outputs): a = rd(rd(silu(min(g, L))) * clamp(u, -L, L)).
__device__ __forceinline__ __nv_bfloat16 swiglu_value(float gr, float ur, float L) {
  const float gv = fminf(gr, L);
  const float uv = fminf(fmaxf(ur, -L), L);
  const float silu = __bfloat162float(__float2bfloat16_rn(__fdiv_rn(gv, __fadd_rn(1.0f, expf(-gv)))));
  return __float2bfloat16_rn(__fmul_rn(silu, uv));
}

// Epilogues of one strip pair (acc[h] and acc[2 + h]: rows g and g + 8 of the strip, token
// 2q + h; tokens >= rows are not written). y points at the tile's first output row.
// gate|up: acc0 the gate strip, acc1 the matching up strip of the 16 columns [col0, col0 + 16):
// each half's own global factor, bf16 roundings as the linear's outputs, then the clamped SwiGLU.
__device__ __forceinline__ void swiglu_store(const float (&acc0)[4], const float (&acc1)[4], float fg, float fu, float L,
                                             int rows, int g, int q, __nv_bfloat16* y, int64_t ld, int64_t col0) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int tok = 2 * q + h;
    if (tok >= rows) continue;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float gr = __bfloat162float(__float2bfloat16_rn(acc0[2 * r + h] * fg));
      const float ur = __bfloat162float(__float2bfloat16_rn(acc1[2 * r + h] * fu));
      y[tok * ld + col0 + g + 8 * r] = swiglu_value(gr, ur, L);
    }
  }
}
// down: strips s0 and s0 + 1 (has1 == false: s0 alone) of n output rows, factor f.
__device__ __forceinline__ void down_store(const float (&acc0)[4], const float (&acc1)[4], float f, int rows, int g, int q,
                                           __nv_bfloat16* y, int64_t n, int64_t s0, bool has1) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int tok = 2 * q + h;
    if (tok >= rows) continue;
    __nv_bfloat16* yr = y + tok * n;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t n0 = s0 * kTileRows + g + 8 * r, n1 = (s0 + 1) * kTileRows + g + 8 * r;
      if (n0 < n) yr[n0] = __float2bfloat16_rn(acc0[2 * r + h] * f);
      if (has1 && n1 < n) yr[n1] = __float2bfloat16_rn(acc1[2 * r + h] * f);
    }
  }
}

// NT: token groups of 8 (1: tiles of at most 8 tokens, 2: at most 16). NS: strips per item
// (gate|up: 2, its gate and up strips; down: 2 or 1). R: register chunks in the ring (gate|up
// at 8-token tiles also 1: ~105 instead of ~150 registers, so ~18 warps per SM instead of 12).
// The instantiations are a closed list: prepare_stream below names each one.
template <bool NV, bool GATEUP, int NT, int NS = 2, int R = kStreamRing>
__global__ void __launch_bounds__(stream_max_warps<NT>() * 32, 1)
    moe_stream_kernel(const MoeGroupedArgs a, int groups_per_tile) {
  static_assert(NS == 2 || (NS == 1 && !GATEUP && NT == 1), "gate|up items are strip pairs; down items 1 or 2 strips");
  static_assert(R == kStreamRing || (R == 1 && GATEUP && NT == 1), "a ring of 1 chunk for 8-token gate|up only");
  extern __shared__ __align__(16) __nv_bfloat16 xs[];  // [tile_tokens][K + 8]
  const int W = static_cast<int>(blockDim.x / 32);
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int g = lane / 4, q = lane % 4;
  const int64_t K = a.k;
  const int pitch = static_cast<int>(K) + 8;
  const int tt = a.tile_tokens;

  // gate|up reads offsets the dispatch (its predecessor) wrote: wait first. down's offsets
  // are two kernels old: read them through L2 and start the weights before the wait.
  if constexpr (GATEUP) {
    moe_pdl_wait();
    moe_pdl_trigger();
  }
  // down with tile counters: its CTA 0 still waits for the whole gate|up kernel before it exits,
  // so that down's completion (which the combine waits for) implies gate|up's.
  auto finish = [&] {
    if constexpr (!GATEUP)
      if (a.tile_ready && blockIdx.x == 0) moe_pdl_wait();
  };
  const int64_t bid = blockIdx.x;
  MoeTileRef tr;
  if (!moe_find_tile(a, bid / groups_per_tile, tt, tr)) {
    if constexpr (!GATEUP) moe_pdl_trigger();
    finish();
    return;  // uniform: past the last real tile
  }
  const int e = tr.e;
  const int64_t row0 = tr.row0;
  const int rows = tr.rows;

  const int64_t strips = (a.n + kTileRows - 1) / kTileRows;
  const int64_t n_items = GATEUP ? a.inter / kTileRows : (strips + NS - 1) / NS;
  const int64_t item = static_cast<int64_t>(bid % groups_per_tile) * W + warp;
  const bool active = item < n_items;
  int64_t s0, s1;
  bool has1 = true;
  if constexpr (GATEUP) {
    s0 = item;
    s1 = a.inter / kTileRows + item;
  } else {
    s0 = NS * item;
    has1 = NS == 2 && 2 * item + 1 < strips;
    s1 = has1 ? s0 + 1 : s0;  // odd strip count: the last item reads its strip twice, writes once
  }
  StripRing<NV, NS, R> ring;
  if constexpr (NS == 2)
    ring.start(a.codes + e * a.code_stride, a.scales + e * a.scale_stride, a.ktiles, {s0, s1}, lane, active);
  else
    ring.start(a.codes + e * a.code_stride, a.scales + e * a.scale_stride, a.ktiles, {s0}, lane, active);
  if constexpr (!GATEUP) {
    // h (gate|up's output) is read below: this tile's rows are complete once all of its gate|up
    // items are counted (the rest of gate|up may still run), or, without counters, after the
    // whole gate|up kernel.
    if (a.tile_ready) {
      if (threadIdx.x == 0)
        while (moe_ld_acquire(a.tile_ready + tr.tile) < a.inter / kTileRows) __nanosleep(128);
      __syncthreads();
    } else {
      moe_pdl_wait();
    }
    moe_pdl_trigger();
  }

  // Stage the tile's activation rows for all of k.
  const int vec_per_row = static_cast<int>(K / 8);
  for (int r = 0; r < rows; ++r) {
    const __nv_bfloat16* xr = a.x + moe_src_row(a, tr, r) * K;
    for (int v = threadIdx.x; v < vec_per_row; v += blockDim.x) cp_async16(xs + r * pitch + v * 8, xr + v * 8, true);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  if (!active) return finish();

  const int tok = NT == 1 ? lane % 8 : lane % 8 + 8 * (lane / 16);
  const int tok_row = tok < rows ? tok : 0;
  const unsigned xaddr =
      static_cast<unsigned>(__cvta_generic_to_shared(xs + tok_row * pitch + ((lane / 8) % 2) * 8 + (NT == 1 ? (lane / 16) * 16 : 0)));
  float acc[NS][NT][4] = {};
  ring.run(xaddr, acc);

  // Token group t holds the tile's rows 8t..8t+7: its epilogue sees them as rows 0..7.
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const int rows_t = rows - 8 * t;
    if constexpr (GATEUP)
      swiglu_store(acc[0][t], acc[1][t], a.gscale[2 * e] * kEpilogueUnscale, a.gscale[2 * e + 1] * kEpilogueUnscale,
                   a.swiglu_limit, rows_t, g, q, a.y + (row0 + 8 * t) * a.inter, a.inter, item * kTileRows);
    else
      down_store(acc[0][t], acc[NS - 1][t], a.gscale[e] * kEpilogueUnscale, rows_t, g, q, a.y + (row0 + 8 * t) * a.n, a.n, s0,
                 has1);
  }
  if constexpr (GATEUP) {
    if (a.tile_ready) {  // this item's h columns are stored: count it for the tile's down CTAs
      __threadfence();
      __syncwarp();
      if (lane == 0) atomicAdd(a.tile_ready + tr.tile, 1);
    }
  }
  finish();
}

// Warps per CTA that keep the most warps resident per multiprocessor for a stage of `smem`
// bytes: registers and the activation stage both bound the CTAs per SM, so a wide stage (V4-Pro
// gate|up, k = 7168: 115 KB for 8 tokens, two CTAs per SM) needs wider CTAs (6 warps: 12 per
// SM instead of 8). Ties go to the narrower CTA; below 4 warps a CTA stages its tile's rows
// for too few warps (measured on V4-Flash: 1- and 2-warp CTAs at equal occupancy are 5-7%
// slower, notes step 29). Cached per device, kernel and stage size; the query is not a stream
// operation, so it is safe during graph capture.
// CTAs of `warps` warps resident per multiprocessor for a stage of `smem` bytes. Cached per
// device, kernel, width and stage size; the query is not a stream operation, so it is safe
// during graph capture.
template <bool GATEUP, bool NV, int NT, int NS, int R>
cudaError_t stream_ctas_per_sm(int64_t smem, int warps, int& ctas) {
  struct Entry {
    int device;
    int64_t smem;
    int warps, ctas;
  };
  static std::mutex mu;
  static std::vector<Entry> cache;
  int dev = 0;
  if (const cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(mu);
  for (const Entry& c : cache)
    if (c.device == dev && c.smem == smem && c.warps == warps) return ctas = c.ctas, cudaSuccess;
  const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, moe_stream_kernel<NV, GATEUP, NT, NS, R>, 32 * warps,
                                                                      static_cast<size_t>(smem));
  if (e != cudaSuccess) return e;
  cache.push_back({dev, smem, warps, ctas});
  return cudaSuccess;
}

// One stream launch's shape: warps per CTA, CTAs, and the rounds in which the SMs run them.
struct StreamShape {
  int warps = 0;
  int64_t groups = 0, blocks = 0, rounds = 0;
};

// Warps per CTA that keep the most warps resident per multiprocessor for the stage:
// registers and the activation stage both bound the CTAs per SM, so a wide stage (V4-Pro
// gate|up, k = 7168: 115 KB for 8 tokens, two CTAs per SM) needs wider CTAs (6 warps: 12 per
// SM instead of 8). Ties go to the narrower CTA; below 4 warps a CTA stages its tile's rows
// for too few warps (measured on V4-Flash: 1- and 2-warp CTAs at equal occupancy are 5-7%
// slower, notes step 29). Then narrower CTAs while the grid would not cover the SMs several
// times over, so that the few items of a decode call spread evenly (a CTA is the unit the
// hardware places). a.stream_warps pins the width.
template <bool GATEUP, bool NV, int NT, int NS, int R>
cudaError_t stream_shape(const MoeGroupedArgs& a, StreamShape& sh) {
  const int64_t strips = (a.n + kTileRows - 1) / kTileRows;
  const int64_t items = GATEUP ? a.inter / kTileRows : (strips + NS - 1) / NS;
  const int64_t smem = moe_stream_stage_bytes(a.k, a.tile_tokens);
  const int64_t sms = a.sms > 0 ? a.sms : 132;
  int w = a.stream_warps;
  if (w == 0) {
    int best = 0;
    for (int c = 4; c <= stream_max_warps<NT>(); ++c) {
      int ctas = 0;
      if (const cudaError_t e = stream_ctas_per_sm<GATEUP, NV, NT, NS, R>(smem, c, ctas); e != cudaSuccess) return e;
      if (ctas * c > best) best = ctas * c, w = c;
    }
    if (w == 0) w = 4;
    while (w > 1 && a.max_tiles * ((items + w - 1) / w) < 6 * sms) w /= 2;
  }
  if (w < 1 || w > stream_max_warps<NT>()) return cudaErrorInvalidValue;
  int ctas = 0;
  if (const cudaError_t e = stream_ctas_per_sm<GATEUP, NV, NT, NS, R>(smem, w, ctas); e != cudaSuccess) return e;
  sh.warps = w;
  sh.groups = (items + w - 1) / w;
  sh.blocks = a.max_tiles * sh.groups;
  const int64_t per_round = std::max<int64_t>(1, static_cast<int64_t>(ctas) * sms);
  sh.rounds = (sh.blocks + per_round - 1) / per_round;
  return cudaSuccess;
}

// a.tile_tokens <= 8: NT = 1; 9..16: NT = 2. NS: strips per item, R: ring chunks.
template <bool GATEUP, bool NV, int NT, int NS = 2, int R = kStreamRing>
cudaError_t launch_stream_shape(const MoeGroupedArgs& a, const StreamShape& sh, cudaStream_t s) {
  if (sh.blocks >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  // Dynamic shared memory of one CTA: the tile's activation rows for all of k.
  const int64_t smem = moe_stream_stage_bytes(a.k, a.tile_tokens);
  return moe_launch(moe_stream_kernel<NV, GATEUP, NT, NS, R>, dim3(static_cast<unsigned>(sh.blocks)), dim3(32 * sh.warps),
                    static_cast<size_t>(smem), s, a.pdl, a, static_cast<int>(sh.groups));
}
template <bool GATEUP, bool NV, int NT, int NS = 2, int R = kStreamRing>
cudaError_t launch_stream_nt(const MoeGroupedArgs& a, cudaStream_t s) {
  StreamShape sh;
  if (const cudaError_t e = stream_shape<GATEUP, NV, NT, NS, R>(a, sh); e != cudaSuccess) return e;
  return launch_stream_shape<GATEUP, NV, NT, NS, R>(a, sh, s);
}

// Which kernel a stream launch runs. 16-token tiles: strip pairs, a ring of 2. 8-token tiles:
//   - down: one-strip items when a.down_strips is 1, or 0 (automatic) in a call with the
//     per-tile handoff (a.tile_ready: one launch covers every slot, T <= 8 on the V4 layers),
//     where they measured 1-3% faster than strip pairs on the H200 (V4-Flash / V4-Pro T = 2
//     -2.5 / -3%, T = 8 -1.5%), against 0-4% slower with the shared expert beside (T = 32..128);
//   - gate|up: a ring of one chunk when a.gate_up_ring is 1, or 0 in a call with the handoff
//     where it needs fewer rounds of CTAs than a ring of 2 (its lower registers give more
//     warps per SM; at an equal count of rounds its shorter ring only loses: V4-Pro T = 2 +7%,
//     while V4-Flash T = 2 ran -5% and T = 8 -1.7% with fewer rounds; notes step 59).
template <bool GATEUP, bool NV>
cudaError_t launch_stream(const MoeGroupedArgs& a, cudaStream_t s) {
  if (!moe_stream_stage_fits(a.k, a.tile_tokens) || a.tile_tokens < 1 || a.tile_tokens > 16) return cudaErrorInvalidValue;
  if (a.tile_tokens > 8) return launch_stream_nt<GATEUP, NV, 2>(a, s);
  const bool handoff = a.tile_ready != nullptr;
  if constexpr (!GATEUP) {
    if (a.down_strips == 1 || (a.down_strips == 0 && handoff)) return launch_stream_nt<false, NV, 1, 1>(a, s);
    return launch_stream_nt<false, NV, 1>(a, s);
  } else {
    if (a.gate_up_ring == 2 || (a.gate_up_ring == 0 && !handoff)) return launch_stream_nt<true, NV, 1>(a, s);
    StreamShape one;
    if (const cudaError_t e = stream_shape<true, NV, 1, 2, 1>(a, one); e != cudaSuccess) return e;
    if (a.gate_up_ring == 0) {
      StreamShape two;
      if (const cudaError_t e = stream_shape<true, NV, 1, 2, 2>(a, two); e != cudaSuccess) return e;
      if (one.rounds >= two.rounds) return launch_stream_shape<true, NV, 1>(a, two, s);
    }
    return launch_stream_shape<true, NV, 1, 2, 1>(a, one, s);
  }
}

template <bool GATEUP>
cudaError_t prepare_stream() {
  cudaError_t e = cudaSuccess;
  auto raise = [&](auto kernel) {
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMoeStreamMaxSmem);
  };
  raise(moe_stream_kernel<true, GATEUP, 1>);
  raise(moe_stream_kernel<false, GATEUP, 1>);
  raise(moe_stream_kernel<true, GATEUP, 2>);
  raise(moe_stream_kernel<false, GATEUP, 2>);
  if constexpr (!GATEUP) {
    raise(moe_stream_kernel<true, false, 1, 1>);
    raise(moe_stream_kernel<false, false, 1, 1>);
  } else {
    raise(moe_stream_kernel<true, true, 1, 2, 1>);
    raise(moe_stream_kernel<false, true, 1, 2, 1>);
  }
  return e;
}

}  // namespace fp4moe::cuda::moe_detail
