// MoE routing, dispatch and combine on the device (see moe_kernels.h for the data flow and
// ops/cpu/moe_ref.h for the numerics contract these kernels share with the CPU reference).
//
// Router: one warp per token; lane l holds experts l, l+32, ... (at most 16). Selection is k
// rounds of a warp arg-max on (key, -expert id) (redux.sync max of order-preserving integer
// keys, then min of the ids that reach it), so ties go to the lower id exactly as in the
// reference; scores use fp64 transcendentals rounded once to fp32 and explicit _rn fp32
// operations (no FMA contraction), so they match the CPU bit for bit. One kernel per router
// kind, with no local memory: the router runs once per layer call on a cold instruction cache.
// Dispatch: a per-chunk histogram (integer atomics: the counts are exact whatever the order),
// one block that turns the histograms into offsets (CUB block scan), and one warp per chunk
// that places the chunk's pairs in order (__match_any_sync ranks): positions depend only on
// the pair order, never on timing, and no host synchronization is needed anywhere.
// Combine: per token and 8 output columns, the k routed rows in routing order, fp32, then the
// shared row: no floating-point atomics.
#include <cub/block/block_scan.cuh>
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <type_traits>

#include "ops/cuda/moe_kernels.h"

namespace fp4moe::cuda {
namespace {

constexpr int kRouteWarps = 8;
constexpr int kPerLane = kMoeMaxExperts / 32;
constexpr int kMaxTopK = kMoeMaxTopK;
constexpr int kMoeScatterThreads = 256;  // gathers a chunk's slots; one warp then places the pairs

__device__ __forceinline__ float rd(float x, bool bf16) { return bf16 ? __bfloat162float(__float2bfloat16_rn(x)) : x; }
__device__ __forceinline__ float nan_to_neg_inf(float v) { return isnan(v) ? -INFINITY : v; }

struct Cand {
  float key;
  int id;
};
__device__ __forceinline__ bool better(const Cand& a, const Cand& b) {
  return a.key > b.key || (a.key == b.key && a.id < b.id);
}
__device__ __forceinline__ Cand warp_best(Cand c) {
#pragma unroll
  for (int off = 16; off >= 1; off /= 2) {
    Cand o{__shfl_xor_sync(0xffffffffu, c.key, off), __shfl_xor_sync(0xffffffffu, c.id, off)};
    if (better(o, c)) c = o;
  }
  return c;
}

// Order-preserving map of a NaN-free float to uint32 (-0 and +0 alike, -inf > 0) and back
// (zeros come back as +0: the softmax weights only use a key through exp(key - max)).
__device__ __forceinline__ uint32_t ord_key(float k) {
  const uint32_t u = __float_as_uint(__fadd_rn(k, 0.0f));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_of_ord(uint32_t o) { return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o); }

// Best (largest key, then lowest index) of one lane's kPerLane keys: a max tree over
// (key << 32 | (kPerLane - 1 - index)), so ties keep the lower expert id. Candidates whose bit
// is set in `retired` count as 0 (a mask and 64-bit maxima rather than selects of array
// elements: those become runtime-indexed local-memory accesses).
__device__ __forceinline__ void lane_best(const uint32_t (&ok)[kPerLane], uint32_t retired, uint32_t& bk, int& bi) {
  uint64_t c[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i)
    c[i] = (static_cast<uint64_t>((retired >> i) & 1u ? 0u : ok[i]) << 32) | static_cast<uint32_t>(kPerLane - 1 - i);
  static_assert(kPerLane == 16, "a 4-level tree");
  auto level = [&](auto wc) {  // constant bounds: the whole tree stays in registers
    constexpr int w = decltype(wc)::value;
#pragma unroll
    for (int i = 0; i < w; ++i) c[i] = c[2 * i] > c[2 * i + 1] ? c[2 * i] : c[2 * i + 1];
  };
  level(std::integral_constant<int, 8>{});
  level(std::integral_constant<int, 4>{});
  level(std::integral_constant<int, 2>{});
  level(std::integral_constant<int, 1>{});
  bk = static_cast<uint32_t>(c[0] >> 32);
  bi = kPerLane - 1 - static_cast<int>(c[0] & 0xFFu);
}

template <MoeRouterKind KIND>
__device__ __forceinline__ float score_of(float l, bool bf16) {
  if constexpr (KIND == MoeRouterKind::kV4Scored || KIND == MoeRouterKind::kV4Hash) {
    const float sp = rd(l > 20.0f ? l : static_cast<float>(log1p(exp(static_cast<double>(l)))), bf16);
    return rd(__fsqrt_rn(sp), bf16);
  } else if constexpr (KIND == MoeRouterKind::kV3Grouped) {
    return rd(static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(l)))), bf16);
  } else {
    return l;
  }
}

// Score-weighted routers (V4, V3): lane j < k holds selection j (expert my_e, score my_s);
// the renormalizing sum runs over the selections in order (shuffles), the same roundings as
// the CPU reference.
__device__ __forceinline__ void write_score_weights(const MoeRouteArgs& a, int lane, int my_e, float my_s, bool renorm,
                                                    int32_t* ids, float* wts) {
  const int K = a.top_k;
  float sum = 0.0f;
  for (int j = 0; j < K; ++j) sum = __fadd_rn(sum, __shfl_sync(0xffffffffu, my_s, j));
  const float denom = rd(__fadd_rn(rd(sum, a.round_bf16), 1e-20f), a.round_bf16);
  if (lane < K) {
    ids[lane] = my_e;
    wts[lane] = renorm ? rd(__fmul_rn(rd(__fdiv_rn(my_s, denom), a.round_bf16), a.routed_scaling_factor), a.round_bf16)
                       : rd(__fmul_rn(my_s, a.routed_scaling_factor), a.round_bf16);
  }
}

// One instantiation per router kind: each kernel holds only its own kind's code (the routers
// run once per layer call on a cold instruction cache, so code size is latency here).
// tpb tokens per block (1..8): phase 1 spreads the tpb x E score evaluations over the whole
// block (at T = 1 every thread evaluates one expert instead of one warp evaluating all);
// phase 2 gives each token one warp for the selection. Lane j < k holds the j-th selection;
// sums over the selections run in selection order through shuffles.
template <MoeRouterKind KIND>
__global__ void __launch_bounds__(kRouteWarps * 32) moe_route_kernel(const MoeRouteArgs a, int tpb) {
  __shared__ float s_sm[kRouteWarps][kMoeMaxExperts];  // scores of each token
  __shared__ float k_sm[kRouteWarps][kMoeMaxExperts];  // selection keys of each token
  moe_pdl_wait();
  moe_pdl_trigger();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int E = a.n_experts, K = a.top_k;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * tpb;
  const int ntok = static_cast<int>(min(static_cast<int64_t>(tpb), a.T - t0));
  for (int i = threadIdx.x; i < ntok * E; i += blockDim.x) {
    const int tl = i / E, e = i % E;
    const float sc = score_of<KIND>(a.logits[(t0 + tl) * E + e], a.round_bf16);
    s_sm[tl][e] = sc;
    if constexpr (KIND == MoeRouterKind::kSoftmax) k_sm[tl][e] = nan_to_neg_inf(sc);
    else k_sm[tl][e] = nan_to_neg_inf(rd(__fadd_rn(sc, a.bias ? a.bias[e] : 0.0f), a.round_bf16));
  }
  __syncthreads();
  if (warp >= ntok) return;
  const int64_t t = t0 + warp;
  int32_t* ids = a.ids + t * K;
  float* wts = a.weights + t * K;
  const bool padded = a.n_valid && t >= *a.n_valid;
  auto drop = [&] {
    for (int j = lane; j < K; j += 32) ids[j] = -1, wts[j] = 0.0f;
  };
  if (padded) return drop();
  const float* s = s_sm[warp];

  if constexpr (KIND == MoeRouterKind::kV4Hash) {
    const int64_t tok = a.token_ids[t];
    if (tok < 0 || tok >= a.vocab) return drop();
    const int32_t my_e = lane < K ? a.tid2eid[tok * K + lane] : 0;
    if (!__all_sync(0xffffffffu, my_e >= 0 && my_e < E)) return drop();
    return write_score_weights(a, lane, my_e, lane < K ? s[my_e] : 0.0f, true, ids, wts);
  } else {
    float key[kPerLane];
    bool candidate[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane + 32 * i;
      key[i] = e < E ? k_sm[warp][e] : -INFINITY;
      candidate[i] = e < E;
    }

    if constexpr (KIND == MoeRouterKind::kV3Grouped) {
      const float* ks = k_sm[warp];
      const int per = E / a.n_group;
      Cand g{-INFINITY, INT_MAX};
      if (lane < a.n_group) {
        float m1 = -INFINITY, m2 = -INFINITY;
        for (int i = 0; i < per; ++i) {
          const float v = ks[lane * per + i];
          if (v > m1) m2 = m1, m1 = v;
          else if (v > m2) m2 = v;
        }
        g = Cand{nan_to_neg_inf(__fadd_rn(m1, m2)), lane};
      }
      unsigned chosen = 0;
      for (int j = 0; j < a.topk_group; ++j) {
        const Cand b = warp_best(g);
        chosen |= 1u << b.id;
        if (lane == b.id) g = Cand{-INFINITY, INT_MAX};
      }
      // Only the chosen groups' experts are candidates: a -inf key inside them still ranks
      // above every expert outside them (masking those to -inf would let a lower id win).
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int e = lane + 32 * i;
        if (e < E && !((chosen >> (e / per)) & 1u)) candidate[i] = false;
      }
    }

    // Top-k: k rounds of a warp arg-max on order-preserving integer keys (0 = not a candidate):
    // each lane keeps the best of its own candidates (a 4-level tree, ties to the lower id), a
    // round is one redux max over the lanes and one redux min of the ids that reach it, and only
    // the winner's lane retires the winner and rebuilds its best. Lane j keeps round j's result.
    uint32_t okey[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) okey[i] = candidate[i] ? ord_key(key[i]) : 0u;
    uint32_t bk, retired = 0;
    int bi;
    lane_best(okey, retired, bk, bi);
    int my_sel = 0;
    float my_key = 0.0f;
    for (int j = 0; j < K; ++j) {
      const uint32_t wk = __reduce_max_sync(0xffffffffu, bk);
      const uint32_t wid = __reduce_min_sync(0xffffffffu, bk == wk ? static_cast<uint32_t>(lane + 32 * bi) : 0xffffffffu);
      if (static_cast<int>(wid & 31) == lane) {
        retired |= 1u << bi;
        lane_best(okey, retired, bk, bi);
      }
      if (lane == j) my_sel = static_cast<int>(wid), my_key = key_of_ord(wk);
    }

    if constexpr (KIND == MoeRouterKind::kSoftmax) {
      float m = -INFINITY;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) m = key[i] > m ? key[i] : m;  // -inf padding never wins
#pragma unroll
      for (int off = 16; off >= 1; off /= 2) {
        const float o = __shfl_xor_sync(0xffffffffu, m, off);
        m = o > m ? o : m;
      }
      const double my_x = lane < K ? exp(static_cast<double>(__fsub_rn(my_key, m))) : 0.0;
      double z = 0.0;
      if (a.renormalize) {
        for (int j = 0; j < K; ++j) z += __shfl_sync(0xffffffffu, my_x, j);
      } else {
        for (int i = 0; i < kPerLane; ++i)
          if (lane + 32 * i < E) z += exp(static_cast<double>(__fsub_rn(key[i], m)));
#pragma unroll
        for (int off = 16; off >= 1; off /= 2) z = z + __shfl_xor_sync(0xffffffffu, z, off);
      }
      if (lane < K) {
        const float p = static_cast<float>(my_x / z);
        ids[lane] = my_sel;
        wts[lane] = rd(__fmul_rn(rd(p, a.round_bf16), a.routed_scaling_factor), a.round_bf16);
      }
      return;
    } else {
      // V4 scored and V3: weights from the scores (never the bias).
      write_score_weights(a, lane, my_sel, lane < K ? s[my_sel] : 0.0f, KIND == MoeRouterKind::kV4Scored || a.renormalize,
                          ids, wts);
    }
  }
}

// ---- dispatch -----------------------------------------------------------------------------
__device__ __forceinline__ int slot_of(const MoeDispatchArgs& a, int64_t p) {
  const int64_t t = p / a.kp;
  const int j = static_cast<int>(p % a.kp);
  if (a.n_valid && t >= *a.n_valid) return -1;
  if (j == a.k) return a.shared_slot;
  const int32_t g = a.ids[t * a.k + j];
  if (g < 0 || g >= a.n_global) return -1;  // dropped or stale id: never indexes out of bounds
  return a.expert_map[g];
}

// Places pairs [p0, p1) in order, one warp: ranks among equal slots by __match_any_sync, then
// the lowest lane of each group advances its slot's next position (base, shared memory).
// slots[p - p0]: pair p's slot (slot_of), gathered beforehand by the whole block, so the
// warp's serial walk over the pairs does no dependent global loads (at 448 pairs these made
// the one-chunk dispatch 11.5 us, on the critical path of every call).
__device__ __forceinline__ void ordered_scatter(const MoeDispatchArgs& a, int64_t p0, int64_t p1, const int* slots,
                                                int* base, int lane) {
  for (int64_t g0 = p0; g0 < p1; g0 += 32) {
    const int64_t p = g0 + lane;
    const int e = p < p1 ? slots[p - p0] : -2;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    int pos = -1;
    if (e >= 0) pos = base[e] + rank;
    __syncwarp();
    if (e >= 0 && lane == __ffs(peers) - 1) base[e] += __popc(peers);
    __syncwarp();
    if (p < p1) {
      a.pair_pos[p] = pos;
      if (pos >= 0) a.sorted_tok[pos] = static_cast<int32_t>(p / a.kp);
    }
  }
}

__global__ void __launch_bounds__(256) moe_count_kernel(const MoeDispatchArgs a) {
  extern __shared__ int hist[];
  moe_pdl_wait();
  moe_pdl_trigger();
  for (int e = threadIdx.x; e < a.slots; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  const int64_t P = a.T * a.kp;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kMoeDispatchChunk;
  const int64_t p1 = min(P, p0 + kMoeDispatchChunk);
  for (int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    const int e = slot_of(a, p);
    if (e >= 0) atomicAdd(&hist[e], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < a.slots; e += blockDim.x)
    a.chunk_counts[static_cast<int64_t>(blockIdx.x) * a.slots + e] = hist[e];
}

using OffsetScan = cub::BlockScan<int, kMoeMaxSlots>;
// Thread e (of kMoeMaxSlots) holds slot e's pair count `run`: writes the segment and tile
// offsets (exclusive scans of the counts and of the tiles they fill) and their totals, and
// returns slot e's segment offset.
__device__ __forceinline__ int scan_offsets(const MoeDispatchArgs& a, OffsetScan::TempStorage& tmp, int e, int run) {
  const int tt = e == a.shared_slot ? a.shared_tile_tokens : a.tile_tokens;
  const int tiles = (run + tt - 1) / tt;
  int seg, tile, seg_total, tile_total;
  OffsetScan(tmp).ExclusiveSum(run, seg, seg_total);
  __syncthreads();
  OffsetScan(tmp).ExclusiveSum(tiles, tile, tile_total);
  if (e < a.slots) a.seg_off[e] = seg, a.tile_off[e] = tile;
  if (e == 0) a.seg_off[a.slots] = seg_total, a.tile_off[a.slots] = tile_total;
  if (a.tile_ready)
    for (int i = threadIdx.x; i < tile_total; i += blockDim.x) a.tile_ready[i] = 0;
  return seg;
}

__global__ void __launch_bounds__(kMoeMaxSlots) moe_scan_kernel(const MoeDispatchArgs a, int64_t nchunks) {
  __shared__ OffsetScan::TempStorage tmp;
  moe_pdl_wait();
  moe_pdl_trigger();
  const int e = threadIdx.x;
  int run = 0;
  if (e < a.slots) {
    for (int64_t c = 0; c < nchunks; ++c) {
      int32_t* cc = a.chunk_counts + c * a.slots + e;
      const int v = *cc;
      *cc = run;  // exclusive offset of this chunk inside the slot's segment
      run += v;
    }
  }
  scan_offsets(a, tmp, e, run);
}

__global__ void __launch_bounds__(kMoeScatterThreads) moe_scatter_kernel(const MoeDispatchArgs a) {
  extern __shared__ int base[];
  __shared__ int slots[kMoeDispatchChunk];
  moe_pdl_wait();
  moe_pdl_trigger();
  const int64_t P = a.T * a.kp;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kMoeDispatchChunk;
  const int64_t p1 = min(P, p0 + kMoeDispatchChunk);
  for (int e = threadIdx.x; e < a.slots; e += blockDim.x)
    base[e] = a.seg_off[e] + a.chunk_counts[static_cast<int64_t>(blockIdx.x) * a.slots + e];
  for (int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) slots[p - p0] = slot_of(a, p);
  __syncthreads();
  if (threadIdx.x >= 32) return;
  ordered_scatter(a, p0, p1, slots, base, static_cast<int>(threadIdx.x));
}

// Decode-sized dispatch (one chunk): histogram, scan and ordered scatter in one block, the
// same positions as the three kernels above, two launches fewer.
__global__ void __launch_bounds__(kMoeMaxSlots) moe_dispatch_one_kernel(const MoeDispatchArgs a) {
  __shared__ OffsetScan::TempStorage tmp;
  __shared__ int hist[kMoeMaxSlots];
  __shared__ int slots[kMoeDispatchChunk];
  moe_pdl_wait();
  moe_pdl_trigger();
  const int e = threadIdx.x;
  hist[e] = 0;
  __syncthreads();
  const int64_t P = a.T * a.kp;
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
    const int sl = slot_of(a, p);
    slots[p] = sl;
    if (sl >= 0) atomicAdd(&hist[sl], 1);
  }
  __syncthreads();
  const int seg = scan_offsets(a, tmp, e, e < a.slots ? hist[e] : 0);
  if (e < a.slots) hist[e] = seg;
  __syncthreads();
  if (threadIdx.x >= 32) return;
  ordered_scatter(a, 0, P, slots, hist, threadIdx.x);
}

// ---- combine ------------------------------------------------------------------------------
// KMAX: the unrolled bound on k (8 or 16), so a top-6 layer runs the smaller body.
template <int KMAX>
__global__ void __launch_bounds__(256) moe_combine_kernel(const MoeCombineArgs a) {
  moe_pdl_wait();
  moe_pdl_trigger();
  const int64_t vec_per_row = a.H / 8;
  const int64_t total = a.T * vec_per_row;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < total;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = v / vec_per_row, c = (v % vec_per_row) * 8;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int32_t pos[KMAX];
    float w[KMAX];
#pragma unroll
    for (int j = 0; j < KMAX; ++j) {
      pos[j] = j < a.k ? a.pair_pos[t * a.kp + j] : -1;
      w[j] = j < a.k ? a.weights[t * a.k + j] : 0.0f;
    }
    uint4 raw[KMAX];
#pragma unroll
    for (int j = 0; j < KMAX; ++j)  // all loads in flight before the first use
      raw[j] = pos[j] >= 0 ? *reinterpret_cast<const uint4*>(a.y + static_cast<int64_t>(pos[j]) * a.H + c) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < KMAX; ++j) {
      if (pos[j] < 0) continue;
      const __nv_bfloat16* yv = reinterpret_cast<const __nv_bfloat16*>(&raw[j]);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = moe_combine_step(acc[i], __bfloat162float(yv[i]), w[j]);
    }
    int32_t spos = -1;
    if (a.has_shared) spos = a.pair_pos[t * a.kp + a.k];
    uint4 sraw = make_uint4(0, 0, 0, 0);
    if (spos >= 0) sraw = *reinterpret_cast<const uint4*>(a.y + static_cast<int64_t>(spos) * a.H + c);
    const __nv_bfloat16* sv = reinterpret_cast<const __nv_bfloat16*>(&sraw);
    uint4 outv;
    __nv_bfloat16* o = reinterpret_cast<__nv_bfloat16*>(&outv);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = moe_combine_finish(acc[i], spos >= 0, __bfloat162float(sv[i]));
    *reinterpret_cast<uint4*>(a.out + t * a.H + c) = outv;
  }
}

}  // namespace

cudaError_t launch_moe_route(const MoeRouteArgs& a, cudaStream_t s) {
  if (a.T == 0) return cudaSuccess;
  const int tpb = a.T < 1024 ? 1 : kRouteWarps;  // few tokens: one block each, all threads scoring
  const int64_t blocks = (a.T + tpb - 1) / tpb;
  auto go = [&](auto kernel) {
    return moe_launch(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kRouteWarps * 32), 0, s, a.pdl, a, tpb);
  };
  switch (a.kind) {
    case MoeRouterKind::kV4Scored: return go(moe_route_kernel<MoeRouterKind::kV4Scored>);
    case MoeRouterKind::kV4Hash: return go(moe_route_kernel<MoeRouterKind::kV4Hash>);
    case MoeRouterKind::kV3Grouped: return go(moe_route_kernel<MoeRouterKind::kV3Grouped>);
    case MoeRouterKind::kSoftmax: return go(moe_route_kernel<MoeRouterKind::kSoftmax>);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_moe_dispatch(const MoeDispatchArgs& a, cudaStream_t s) {
  const int64_t P = a.T * a.kp;
  const int64_t nchunks = moe_dispatch_chunks(P);
  const size_t hist_bytes = static_cast<size_t>(a.slots) * 4;
  if (nchunks == 1) return moe_launch(moe_dispatch_one_kernel, dim3(1), dim3(kMoeMaxSlots), 0, s, a.pdl, a);
  bool pdl = a.pdl;
  if (nchunks > 0) {
    if (cudaError_t e = moe_launch(moe_count_kernel, dim3(static_cast<unsigned>(nchunks)), dim3(256), hist_bytes, s, pdl, a);
        e != cudaSuccess)
      return e;
    pdl = true;
  }
  // also writes zero offsets when T = 0
  if (cudaError_t e = moe_launch(moe_scan_kernel, dim3(1), dim3(kMoeMaxSlots), 0, s, pdl, a, nchunks); e != cudaSuccess) return e;
  if (nchunks > 0) return moe_launch(moe_scatter_kernel, dim3(static_cast<unsigned>(nchunks)), dim3(kMoeScatterThreads), hist_bytes, s, true, a);
  return cudaSuccess;
}

cudaError_t launch_moe_combine(const MoeCombineArgs& a, cudaStream_t s) {
  const int64_t total = a.T * (a.H / 8);
  if (total == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((total + 255) / 256, 132 * 16);
  if (a.k <= 8) return moe_launch(moe_combine_kernel<8>, dim3(static_cast<unsigned>(blocks)), dim3(256), 0, s, a.pdl, a);
  return moe_launch(moe_combine_kernel<kMaxTopK>, dim3(static_cast<unsigned>(blocks)), dim3(256), 0, s, a.pdl, a);
}

}  // namespace fp4moe::cuda
