// MoE routing, dispatch and combine on the device (see moe_kernels.h for the data flow and
// ops/cpu/moe_ref.h for the numerics contract these kernels share with the CPU reference).
//
// Router: one warp per token; lane l holds experts l, l+32, ... (at most 16). Selection is k
// rounds of a warp arg-max on (key, -expert id) (redux.sync max of order-preserving integer
// keys, then min of the ids that reach it), so ties go to the lower id exactly as in the
// reference; scores use fp64 transcendentals rounded once to fp32 and explicit _rn fp32
// operations (no FMA contraction), so they match the CPU bit for bit.
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

#include "ops/cuda/moe_kernels.h"

namespace fp4moe::cuda {
namespace {

constexpr int kRouteWarps = 8;
constexpr int kPerLane = kMoeMaxExperts / 32;
constexpr int kMaxTopK = 16;  // as cpu::validate_router

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

// Best (largest key, then lowest index) of one lane's kPerLane keys: a tree whose left side
// always holds the lower indices, so ties keep the lower expert id.
__device__ __forceinline__ void lane_best(const uint32_t (&ok)[kPerLane], uint32_t& bk, int& bi) {
  uint32_t k[kPerLane];
  int ix[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) k[i] = ok[i], ix[i] = i;
#pragma unroll
  for (int w = kPerLane / 2; w >= 1; w /= 2) {
#pragma unroll
    for (int i = 0; i < w; ++i) {
      const bool r = k[2 * i + 1] > k[2 * i];
      k[i] = r ? k[2 * i + 1] : k[2 * i];
      ix[i] = r ? ix[2 * i + 1] : ix[2 * i];
    }
  }
  bk = k[0];
  bi = ix[0];
}

__device__ __forceinline__ float score_of(MoeRouterKind kind, float l, bool bf16) {
  if (kind == MoeRouterKind::kV4Scored || kind == MoeRouterKind::kV4Hash) {
    const float sp = rd(l > 20.0f ? l : static_cast<float>(log1p(exp(static_cast<double>(l)))), bf16);
    return rd(__fsqrt_rn(sp), bf16);
  }
  if (kind == MoeRouterKind::kV3Grouped) return rd(static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(l)))), bf16);
  return l;
}

// tpb tokens per block (1..8): phase 1 spreads the tpb x E score evaluations over the whole
// block (at T = 1 every thread evaluates one expert instead of one warp evaluating all);
// phase 2 gives each token one warp for the selection.
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
    const float sc = score_of(a.kind, a.logits[(t0 + tl) * E + e], a.round_bf16);
    s_sm[tl][e] = sc;
    k_sm[tl][e] = a.kind == MoeRouterKind::kSoftmax ? nan_to_neg_inf(sc)
                                                     : nan_to_neg_inf(rd(__fadd_rn(sc, a.bias ? a.bias[e] : 0.0f), a.round_bf16));
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
  float key[kPerLane];
  const float* s = s_sm[warp];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    key[i] = e < E ? k_sm[warp][e] : -INFINITY;
  }

  if (a.kind == MoeRouterKind::kV4Hash) {
    const int64_t tok = a.token_ids[t];
    if (tok < 0 || tok >= a.vocab) return drop();
    bool ok = true;
    for (int j = 0; j < K; ++j) {
      const int32_t e = a.tid2eid[tok * K + j];
      ok &= e >= 0 && e < E;
    }
    if (!ok) return drop();
    float sum = 0.0f;
    for (int j = 0; j < K; ++j) sum = __fadd_rn(sum, s[a.tid2eid[tok * K + j]]);
    const float denom = rd(__fadd_rn(rd(sum, a.round_bf16), 1e-20f), a.round_bf16);
    for (int j = lane; j < K; j += 32) {
      const int32_t e = a.tid2eid[tok * K + j];
      ids[j] = e;
      wts[j] = rd(__fmul_rn(rd(__fdiv_rn(s[e], denom), a.round_bf16), a.routed_scaling_factor), a.round_bf16);
    }
    return;
  }

  if (a.kind == MoeRouterKind::kV3Grouped) {
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
      g = Cand{__fadd_rn(m1, m2), lane};
    }
    unsigned chosen = 0;
    for (int j = 0; j < a.topk_group; ++j) {
      const Cand b = warp_best(g);
      chosen |= 1u << b.id;
      if (lane == b.id) g = Cand{-INFINITY, INT_MAX};
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane + 32 * i;
      if (e < E && !((chosen >> (e / per)) & 1u)) key[i] = -INFINITY;
    }
  }

  // Top-k: k rounds of a warp arg-max on order-preserving integer keys (0 = not a candidate):
  // each lane keeps the best of its own candidates (a 4-level tree, ties to the lower id), a
  // round is one redux max over the lanes and one redux min of the ids that reach it, and only
  // the winner's lane retires the winner and rebuilds its best.
  uint32_t okey[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) okey[i] = lane + 32 * i < E ? ord_key(key[i]) : 0u;
  uint32_t bk;
  int bi;
  lane_best(okey, bk, bi);
  int sel[16];
  float selkey[16];
  for (int j = 0; j < K; ++j) {
    const uint32_t wk = __reduce_max_sync(0xffffffffu, bk);
    const uint32_t wid = __reduce_min_sync(0xffffffffu, bk == wk ? static_cast<uint32_t>(lane + 32 * bi) : 0xffffffffu);
    if (static_cast<int>(wid & 31) == lane) {
#pragma unroll
      for (int i = 0; i < kPerLane; ++i)
        if (i == bi) okey[i] = 0u;
      lane_best(okey, bk, bi);
    }
    sel[j] = static_cast<int>(wid);
    selkey[j] = key_of_ord(wk);
  }

  if (a.kind == MoeRouterKind::kSoftmax) {
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) m = key[i] > m ? key[i] : m;  // -inf padding never wins
#pragma unroll
    for (int off = 16; off >= 1; off /= 2) {
      const float o = __shfl_xor_sync(0xffffffffu, m, off);
      m = o > m ? o : m;
    }
    double z = 0.0;
    if (a.renormalize) {
      for (int j = 0; j < K; ++j) z += exp(static_cast<double>(__fsub_rn(selkey[j], m)));
    } else {
#pragma unroll
      for (int i = 0; i < kPerLane; ++i)
        if (lane + 32 * i < E) z += exp(static_cast<double>(__fsub_rn(key[i], m)));
#pragma unroll
      for (int off = 16; off >= 1; off /= 2) z = z + __shfl_xor_sync(0xffffffffu, z, off);
    }
    for (int j = 0; j < K; ++j) {
      if (lane != (j & 31)) continue;
      const float p = static_cast<float>(exp(static_cast<double>(__fsub_rn(selkey[j], m))) / z);
      ids[j] = sel[j];
      wts[j] = rd(__fmul_rn(rd(p, a.round_bf16), a.routed_scaling_factor), a.round_bf16);
    }
    return;
  }

  // V4 scored and V3: weights from the scores (never the bias).
  const bool renorm = a.kind == MoeRouterKind::kV4Scored || a.renormalize;
  float sum = 0.0f;
  for (int j = 0; j < K; ++j) sum = __fadd_rn(sum, s[sel[j]]);
  const float denom = rd(__fadd_rn(rd(sum, a.round_bf16), 1e-20f), a.round_bf16);
  for (int j = 0; j < K; ++j) {
    if (lane != (j & 31)) continue;
    const float sj = s[sel[j]];
    ids[j] = sel[j];
    wts[j] = renorm ? rd(__fmul_rn(rd(__fdiv_rn(sj, denom), a.round_bf16), a.routed_scaling_factor), a.round_bf16)
                    : rd(__fmul_rn(sj, a.routed_scaling_factor), a.round_bf16);
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
__device__ __forceinline__ void ordered_scatter(const MoeDispatchArgs& a, int64_t p0, int64_t p1, int* base, int lane) {
  for (int64_t g0 = p0; g0 < p1; g0 += 32) {
    const int64_t p = g0 + lane;
    const int e = p < p1 ? slot_of(a, p) : -2;
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

__global__ void __launch_bounds__(kMoeMaxSlots) moe_scan_kernel(const MoeDispatchArgs a, int64_t nchunks) {
  using Scan = cub::BlockScan<int, kMoeMaxSlots>;
  __shared__ typename Scan::TempStorage tmp;
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
  const int tt = e == a.shared_slot ? a.shared_tile_tokens : a.tile_tokens;
  const int tiles = (run + tt - 1) / tt;
  int seg, tile, seg_total, tile_total;
  Scan(tmp).ExclusiveSum(run, seg, seg_total);
  __syncthreads();
  Scan(tmp).ExclusiveSum(tiles, tile, tile_total);
  if (e < a.slots) a.seg_off[e] = seg, a.tile_off[e] = tile;
  if (e == 0) a.seg_off[a.slots] = seg_total, a.tile_off[a.slots] = tile_total;
}

__global__ void __launch_bounds__(32) moe_scatter_kernel(const MoeDispatchArgs a) {
  extern __shared__ int base[];
  moe_pdl_wait();
  moe_pdl_trigger();
  const int lane = threadIdx.x;
  for (int e = lane; e < a.slots; e += 32)
    base[e] = a.seg_off[e] + a.chunk_counts[static_cast<int64_t>(blockIdx.x) * a.slots + e];
  __syncwarp();
  const int64_t P = a.T * a.kp;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kMoeDispatchChunk;
  ordered_scatter(a, p0, min(P, p0 + kMoeDispatchChunk), base, lane);
}

// Decode-sized dispatch (one chunk): histogram, scan and ordered scatter in one block, the
// same positions as the three kernels above, two launches fewer.
__global__ void __launch_bounds__(kMoeMaxSlots) moe_dispatch_one_kernel(const MoeDispatchArgs a) {
  using Scan = cub::BlockScan<int, kMoeMaxSlots>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ int hist[kMoeMaxSlots];
  moe_pdl_wait();
  moe_pdl_trigger();
  const int e = threadIdx.x;
  hist[e] = 0;
  __syncthreads();
  const int64_t P = a.T * a.kp;
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
    const int sl = slot_of(a, p);
    if (sl >= 0) atomicAdd(&hist[sl], 1);
  }
  __syncthreads();
  const int run = e < a.slots ? hist[e] : 0;
  const int tt = e == a.shared_slot ? a.shared_tile_tokens : a.tile_tokens;
  const int tiles = (run + tt - 1) / tt;
  int seg, tile, seg_total, tile_total;
  Scan(tmp).ExclusiveSum(run, seg, seg_total);
  __syncthreads();
  Scan(tmp).ExclusiveSum(tiles, tile, tile_total);
  if (e < a.slots) a.seg_off[e] = seg, a.tile_off[e] = tile, hist[e] = seg;
  if (e == 0) a.seg_off[a.slots] = seg_total, a.tile_off[a.slots] = tile_total;
  __syncthreads();
  if (threadIdx.x >= 32) return;
  ordered_scatter(a, 0, P, hist, threadIdx.x);
}

// ---- combine ------------------------------------------------------------------------------
__global__ void __launch_bounds__(256) moe_combine_kernel(const MoeCombineArgs a) {
  moe_pdl_wait();
  moe_pdl_trigger();
  const int64_t vec_per_row = a.H / 8;
  const int64_t total = a.T * vec_per_row;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < total;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = v / vec_per_row, c = (v % vec_per_row) * 8;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int32_t pos[kMaxTopK];
    float w[kMaxTopK];
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j) {
      pos[j] = j < a.k ? a.pair_pos[t * a.kp + j] : -1;
      w[j] = j < a.k ? a.weights[t * a.k + j] : 0.0f;
    }
    uint4 raw[kMaxTopK];
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j)  // all loads in flight before the first use
      raw[j] = pos[j] >= 0 ? *reinterpret_cast<const uint4*>(a.y + static_cast<int64_t>(pos[j]) * a.H + c) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j) {
      if (pos[j] < 0) continue;
      const __nv_bfloat16* yv = reinterpret_cast<const __nv_bfloat16*>(&raw[j]);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = __fadd_rn(acc[i], __fmul_rn(__bfloat162float(yv[i]), w[j]));
    }
    int32_t spos = -1;
    if (a.has_shared) spos = a.pair_pos[t * a.kp + a.k];
    uint4 sraw = make_uint4(0, 0, 0, 0);
    if (spos >= 0) sraw = *reinterpret_cast<const uint4*>(a.y + static_cast<int64_t>(spos) * a.H + c);
    const __nv_bfloat16* sv = reinterpret_cast<const __nv_bfloat16*>(&sraw);
    uint4 outv;
    __nv_bfloat16* o = reinterpret_cast<__nv_bfloat16*>(&outv);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      float r = __bfloat162float(__float2bfloat16_rn(acc[i]));
      if (spos >= 0) r = __fadd_rn(r, __bfloat162float(sv[i]));
      o[i] = __float2bfloat16_rn(r);
    }
    *reinterpret_cast<uint4*>(a.out + t * a.H + c) = outv;
  }
}

}  // namespace

cudaError_t launch_moe_route(const MoeRouteArgs& a, cudaStream_t s) {
  if (a.T == 0) return cudaSuccess;
  const int tpb = a.T < 1024 ? 1 : kRouteWarps;  // few tokens: one block each, all threads scoring
  const int64_t blocks = (a.T + tpb - 1) / tpb;
  return moe_launch(moe_route_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kRouteWarps * 32), 0, s, a.pdl, a, tpb);
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
  if (nchunks > 0) return moe_launch(moe_scatter_kernel, dim3(static_cast<unsigned>(nchunks)), dim3(32), hist_bytes, s, true, a);
  return cudaSuccess;
}

cudaError_t launch_moe_combine(const MoeCombineArgs& a, cudaStream_t s) {
  const int64_t total = a.T * (a.H / 8);
  if (total == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((total + 255) / 256, 132 * 16);
  return moe_launch(moe_combine_kernel, dim3(static_cast<unsigned>(blocks)), dim3(256), 0, s, a.pdl, a);
}

}  // namespace fp4moe::cuda
