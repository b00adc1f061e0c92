// The MoE layer for one token (decode at batch 1) after its router, in ONE persistent kernel:
// gate|up + SwiGLU, down and the combine of every (token, expert) pair, the shared expert
// included, with no dispatch kernel and no kernel boundary between the two GEMMs.
//
// Why: at one token the layer is ~100 MB (V4-Flash) of FP4 weights read once. As separate
// kernels, gate|up and down are two dependent reads, each with its own ramp and tail of late
// warps, plus a dispatch and a combine kernel; here the weight stream does not stop between them.
//
// Work: units of one warp each, handed out in order by two device counters, one for gate|up
// units and one for down units (a warp takes the next unit when it finishes one, so fast warps
// take more and there is no tail of fixed assignments).
// A unit is NS weight strips (16 rows each) over all of k, streamed as in moe_stream.cuh:
//   NS = 2 (12 warps per SM): gate|up unit (pair p, item i) = gate strip i and up strip
//     I/16 + i, SwiGLU in the epilogue -> h[p][16 i, 16 i + 16); down unit = strips 2i, 2i + 1.
//   NS = 1 (16 warps per SM): the gate and the up strip of an item are two units, each writes
//     its bf16 half to a scratch row and the second to finish (a per-item counter) applies the
//     SwiGLU; down unit = one strip. Twice the units, each half as long.
//   The host picks NS = 1 when every gate|up unit of a call gets a warp at once (a unit spans
//   all of k, so a second round of them would double the critical path): V4-Flash (1792 strips
//   for 2112 warps) runs NS = 1, V4-Pro (2688 strips, 1344 pairs for 1584 warps) NS = 2.
// Roles: the first gu_warps warps of every CTA (just enough for all gate|up units of a call at
//   once, spread evenly over the CTAs) take gate|up units while there are any, then down
//   units; the other warps take down units from the start. A down unit starts its weight
//   loads, then waits until all gate|up units of its pair have published h[p] (a per-pair
//   counter), and stages h[p] in its warp's shared memory. Only down units wait, and only for
//   gate|up units, which never wait: the gate|up warps of any resident CTA finish them all, so
//   the kernel needs no co-residency guarantee.
// Pairs: the shared expert first (it needs no routing: its units start before the router has
//   finished, under programmatic dependent launch), then the routed pairs that map to a local
//   slot, in routing order.
// Combine: the last down unit to finish a block of output rows (a per-block counter) sums y
//   over the pairs in the combine kernel's order and roundings (moe_combine_step/finish).
// Bits: the strips, the k order, the mma chain and every rounding are those of the grouped
//   path at one token, so the output is bit for bit the grouped path's (batch invariance;
//   tests/gpu/test_moe.cu compares the two with memcmp).
// The counters return to zero at the end of the kernel, ready for the next call or graph
//   replay: every warp ends with exactly one failing down claim, after all its units, and then
//   counts itself out (an acquire-release atomic); the last warp out resets the counters.
#include <cuda_bf16.h>

#include "ops/cuda/moe_kernels.h"
#include "ops/cuda/moe_stream.cuh"

namespace fp4moe::cuda {
namespace {

using detail::cp_async16;
using detail::cp_async_commit;
using detail::cp_async_wait;
using moe_detail::StripRing;
using moe_detail::swiglu_value;

constexpr int kMaxPairs = kMoeMaxTopK + 1;
// Register chunks in flight per warp for one-strip units: 2 (4.6 KB) measured faster than 3
// and 4 on V4-Flash (54.6 us against 55.8 and 60); 4 spills at 16 warps per SM.
constexpr int kRingOne = 2;
constexpr unsigned kFull = 0xffffffffu;

// Claims the next unit (lane 0's atomic, broadcast).
__device__ __forceinline__ int claim(int32_t* next, int lane) {
  int u = 0;
  if (lane == 0) u = atomicAdd(next, 1);
  return __shfl_sync(kFull, u, 0);
}

// The routing of the token as every warp holds it after the router: lane j < k has routed pair j.
struct Routing {
  int my_slot = -1;    // lane j < k: slot of routed pair j, -1 = dropped
  float my_w = 0.0f;   // lane j < k: its routing weight
  unsigned mask = 0;   // routed pairs that run (bit j)
  int shared = 0;      // 1: pair 0 is the shared expert
  int pairs = 0;       // pairs that run
  // Routing position of the r-th running routed pair.
  __device__ __forceinline__ int position(int r) const {
    unsigned m = mask;
    for (int i = 0; i < r; ++i) m &= m - 1;
    return __ffs(m) - 1;
  }
  __device__ __forceinline__ int slot(int p, int shared_slot) const {
    if (p < shared) return shared_slot;
    return __shfl_sync(kFull, my_slot, position(p - shared));
  }
};

// Counter layout (ints; each group starts on its own 128-byte line, so that the polled
// counters do not share a line with the busy ones).
constexpr int kLine = 32;
constexpr int kNextGuOff = 0, kNextDnOff = kLine, kGuDoneOff = 2 * kLine;  // gu_done[p]: p * kLine
constexpr int kExitOff = 1;  // warps done (beside next_gu: touched once per warp, at its end)
constexpr int kHalvesOff = kGuDoneOff + kMaxPairs * kLine;               // halves[p * gu_items + item]
__host__ __device__ constexpr int64_t dn_done_off(int64_t inter) { return kHalvesOff + kMaxPairs * (inter / kTileRows); }

// NS: strips per unit (2: a gate|up unit is an item's gate and up strips, a down unit two
// strips; 1: one strip each, twice the units), W: warps per CTA.
template <bool NV, int NS, int W>
__global__ void __launch_bounds__(W * 32, 1) moe_single_token_kernel(const MoeSingleArgs a) {
  extern __shared__ __align__(16) __nv_bfloat16 smem[];  // x [H], then per warp h [I]
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int g = lane / 4, q = lane % 4;
  const int64_t H = a.hidden, I = a.inter;
  const int gu_items = static_cast<int>(I / kTileRows);          // 16 intermediate columns each
  constexpr int kRows = NS * kTileRows;                           // output rows of a down unit
  const int gu_units = (3 - NS) * gu_items, dn_units = static_cast<int>(H / kRows);  // per pair
  __nv_bfloat16* xs = smem;
  __nv_bfloat16* hs = smem + H + warp * I;
  int32_t* next_gu = a.sync + kNextGuOff;
  int32_t* next_dn = a.sync + kNextDnOff;
  int32_t* gu_done = a.sync + kGuDoneOff;
  int32_t* halves = a.sync + kHalvesOff;
  int32_t* dn_done = a.sync + dn_done_off(I);

  // x and n_valid are the caller's inputs, complete before the router started: read them
  // before the wait.
  for (int64_t v = threadIdx.x; v < H / 8; v += blockDim.x) cp_async16(xs + v * 8, a.x + v * 8, true);
  cp_async_commit();
  const bool row_valid = !a.n_valid || __ldcg(a.n_valid) > 0;
  const int shared_first = a.shared_slot >= 0 && row_valid ? 1 : 0;
  cp_async_wait<0>();
  __syncthreads();
  // ldmatrix row addresses (one token: every row address is the token's; lanes 16..31 16 k on).
  const unsigned xaddr = static_cast<unsigned>(__cvta_generic_to_shared(xs + ((lane / 8) % 2) * 8 + (lane / 16) * 16));
  const unsigned haddr = static_cast<unsigned>(__cvta_generic_to_shared(hs + ((lane / 8) % 2) * 8 + (lane / 16) * 16));

  Routing rt;
  bool routed = false;
  auto ensure_routed = [&] {  // everything past the shared expert needs the router's ids and weights
    if (routed) return;
    moe_pdl_wait();
    if (lane < a.k && row_valid) {
      const int32_t id = __ldcg(a.ids + lane);
      if (id >= 0 && id < a.n_global) rt.my_slot = __ldcg(a.expert_map + id);
      rt.my_w = __ldcg(a.weights + lane);
    }
    rt.mask = __ballot_sync(kFull, rt.my_slot >= 0);
    rt.shared = shared_first;
    rt.pairs = shared_first + __popc(rt.mask);
    routed = true;
  };
  // Roles (see the top of the file): gate|up warps first take gate|up units, down warps take
  // down units; the last failing down claim resets the counters.
  const int nwarps = static_cast<int>(gridDim.x) * W;
  bool gu_mode = warp < a.gu_warps;
  for (;;) {
    int u;
    if (gu_mode) {
      u = claim(next_gu, lane);
      if (u >= gu_units * shared_first) ensure_routed();
      if (u >= (routed ? rt.pairs : shared_first) * gu_units) {
        gu_mode = false;
        continue;
      }
    } else {
      u = claim(next_dn, lane);
      if (u >= dn_units * shared_first) ensure_routed();
      if (routed && u >= rt.pairs * dn_units) {
        if (rt.pairs == 0 && u == 0)  // nothing runs (padding, or every pair dropped): zero output
          for (int64_t i = lane; i < H; i += 32) a.out[i] = __float2bfloat16_rn(0.0f);
        // The warp counts itself out (acquire-release: every counter update it made is visible
        // to the last warp out, and that warp's reset comes after all of them).
        int left = 0;
        if (lane == 0) left = moe_atom_add_acq_rel(a.sync + kExitOff, 1);
        if (__shfl_sync(kFull, left, 0) == nwarps - 1) {  // every other warp is done: reset
          __syncwarp();  // lane 0's acquire before any lane's reset store
          const int64_t n = dn_done_off(I) + dn_units;
          for (int64_t i = lane; i < n; i += 32) a.sync[i] = 0;
        }
        break;
      }
    }
    const bool gate_up = gu_mode;
    const int p = u / (gate_up ? gu_units : dn_units);
    const int v = u % (gate_up ? gu_units : dn_units);
    const int e = p < shared_first ? a.shared_slot : rt.slot(p, a.shared_slot);
    float acc[NS][1][4] = {};  // one token: one token group
    StripRing<NV, NS, NS == 1 ? kRingOne : 2> ring;
    if (gate_up) {
      if constexpr (NS == 2) {
        // Unit v: item v's gate and up strips, the SwiGLU in the epilogue.
        ring.start(a.gu_codes + e * a.gu_code_stride, a.gu_scales + e * a.gu_scale_stride, a.gu_ktiles,
                   {static_cast<int64_t>(v), static_cast<int64_t>(gu_items + v)}, lane, true);
        ring.run(xaddr, acc);
        moe_detail::swiglu_store(acc[0][0], acc[1][0], a.gu_gscale[2 * e] * kEpilogueUnscale,
                                 a.gu_gscale[2 * e + 1] * kEpilogueUnscale, a.swiglu_limit, 1, g, q, a.h + p * I, I,
                                 static_cast<int64_t>(v) * kTileRows);
        __threadfence();
        __syncwarp();
        if (lane == 0) atomicAdd(gu_done + p * kLine, 1);
      } else {
        // Unit v: the gate (even v) or up (odd v) strip of item v / 2, so both halves of an
        // item run side by side; the second to finish applies the SwiGLU.
        const int item = v / 2, up = v % 2;
        ring.start(a.gu_codes + e * a.gu_code_stride, a.gu_scales + e * a.gu_scale_stride, a.gu_ktiles,
                   {static_cast<int64_t>(up * gu_items + item)}, lane, true);
        ring.run(xaddr, acc);
        // This half, rounded to bf16 as the linear's output, to the pair's scratch row.
        const float f = a.gu_gscale[2 * e + up] * kEpilogueUnscale;
        __nv_bfloat16* part = a.gu_part + static_cast<int64_t>(p) * 2 * I + static_cast<int64_t>(up) * I + item * kTileRows;
        if (q == 0) part[g] = __float2bfloat16_rn(acc[0][0][0] * f), part[g + 8] = __float2bfloat16_rn(acc[0][0][2] * f);
        __threadfence();
        __syncwarp();
        int first = 0;
        if (lane == 0) first = atomicAdd(halves + p * gu_items + item, 1) == 0;
        if (!__shfl_sync(kFull, first, 0)) {
          __threadfence();
          const __nv_bfloat16* pg = a.gu_part + static_cast<int64_t>(p) * 2 * I + item * kTileRows;
          if (lane < kTileRows)
            a.h[p * I + item * kTileRows + lane] =
                swiglu_value(__bfloat162float(__ldcg(pg + lane)), __bfloat162float(__ldcg(pg + I + lane)), a.swiglu_limit);
          __threadfence();
          __syncwarp();
          if (lane == 0) atomicAdd(gu_done + p * kLine, 1);
        }
      }
      continue;
    }
    // down unit v: output rows [kRows v, kRows v + kRows) of pair p.
    int64_t strips[NS];
#pragma unroll
    for (int j = 0; j < NS; ++j) strips[j] = static_cast<int64_t>(v) * NS + j;
    ring.start(a.dn_codes + e * a.dn_code_stride, a.dn_scales + e * a.dn_scale_stride, a.dn_ktiles, strips, lane, true);
    if (lane == 0)
      while (moe_ld_acquire(gu_done + p * kLine) < gu_items) __nanosleep(256);
    __syncwarp();
    for (int64_t i = lane; i < I / 8; i += 32) cp_async16(hs + i * 8, a.h + p * I + i * 8, true);
    cp_async_commit();
    cp_async_wait<0>();
    __syncwarp();
    ring.run(haddr, acc);
    __syncwarp();  // every lane's ldmatrix reads of hs are done before the next unit restages it
    ensure_routed();  // a shared-expert unit may have started before the routing was known
    moe_detail::down_store(acc[0][0], acc[NS - 1][0], a.dn_gscale[e] * kEpilogueUnscale, 1, g, q, a.y + p * H, H,
                           static_cast<int64_t>(v) * NS, NS == 2);
    __threadfence();
    __syncwarp();
    int arrived = 0;
    if (lane == 0) arrived = atomicAdd(dn_done + v, 1);
    if (__shfl_sync(kFull, arrived, 0) != rt.pairs - 1) continue;
    // The last pair of these rows: the combine, lane l = row kRows v + l, in the combine
    // kernel's order and roundings: routed pairs in routing order, then the shared row. All
    // pairs' rows are loaded before the first use (one L2 round trip at the kernel's tail).
    __threadfence();
    const int64_t row = static_cast<int64_t>(v) * kRows + (lane % kRows);
    float yr[kMaxPairs];
#pragma unroll
    for (int r = 0; r < kMaxPairs; ++r) yr[r] = r < rt.pairs ? __bfloat162float(__ldcg(a.y + r * H + row)) : 0.0f;
    float sum = 0.0f;
#pragma unroll
    for (int r = 0; r + 1 < kMaxPairs; ++r) {
      if (r >= rt.pairs - shared_first) break;
      const float w = __shfl_sync(kFull, rt.my_w, rt.position(r));
      sum = moe_combine_step(sum, shared_first ? yr[r + 1] : yr[r], w);
    }
    if (lane < kRows) a.out[row] = moe_combine_finish(sum, shared_first, yr[0]);
  }

}

}  // namespace

namespace {
// The two shapes of the kernel. All gate|up units of a call should run at once (a unit is a
// strip's whole k: a second round of them would double the critical path), so one-strip units
// on 16 warps per SM when the layer's gate|up strips fit 16 warps per SM, else strip pairs on
// 12 (V4-Flash: 1792 strips for 2112 warps; V4-Pro: 2688 strips, 1344 pairs for 1584 warps).
constexpr int kWarpsOne = 16, kWarpsPair = 12;
bool one_strip_units(int64_t inter, int k, int sms) { return 2 * (k + 1) * (inter / kTileRows) <= int64_t{kWarpsOne} * sms; }
// Warps per CTA that start on gate|up units: just enough for all of a call's gate|up units at
// once, spread evenly over the CTAs (V4-Flash 14 of 16, V4-Pro 11 of 12): a unit's pace falls
// with the number of busy warps on its multiprocessor (measured: V4-Pro gate|up units took
// 44 us on a multiprocessor running 4 of them, 61 us on one running 12).
int gate_up_warps(int64_t gu_units, int k, int sms, int W) {
  const int64_t q = ((k + 1) * gu_units + sms - 1) / sms;
  return static_cast<int>(q < 1 ? 1 : q > W ? W : q);
}

}  // namespace

int64_t moe_single_sync_ints(int64_t hidden, int64_t inter) { return dn_done_off(inter) + hidden / kTileRows; }
int64_t moe_single_smem_bytes(int64_t hidden, int64_t inter) { return (hidden + kWarpsOne * inter) * 2; }

cudaError_t moe_prepare_single() {
  cudaError_t e = cudaSuccess;
  auto raise = [&](auto kernel) {
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMoeStreamMaxSmem);
  };
  raise(moe_single_token_kernel<true, 1, kWarpsOne>);
  raise(moe_single_token_kernel<false, 1, kWarpsOne>);
  raise(moe_single_token_kernel<true, 2, kWarpsPair>);
  raise(moe_single_token_kernel<false, 2, kWarpsPair>);
  return e;
}

cudaError_t launch_moe_single(const MoeSingleArgs& in, cudaStream_t s) {
  const int64_t smem = moe_single_smem_bytes(in.hidden, in.inter);
  if (smem > kMoeStreamMaxSmem || in.k > kMoeMaxTopK || in.hidden % 64 != 0 || in.inter % 64 != 0) return cudaErrorInvalidValue;
  MoeSingleArgs a = in;
  const int sms = a.sms > 0 ? a.sms : 132;
  const dim3 grid(static_cast<unsigned>(sms));
  const int64_t items = a.inter / kTileRows;
  if (one_strip_units(a.inter, a.k, sms)) {
    const dim3 block(kWarpsOne * 32);
    a.gu_warps = gate_up_warps(2 * items, a.k, sms, kWarpsOne);
    return a.nvfp4 ? moe_launch(moe_single_token_kernel<true, 1, kWarpsOne>, grid, block, static_cast<size_t>(smem), s, a.pdl, a)
                   : moe_launch(moe_single_token_kernel<false, 1, kWarpsOne>, grid, block, static_cast<size_t>(smem), s, a.pdl, a);
  }
  const dim3 block(kWarpsPair * 32);
  a.gu_warps = gate_up_warps(items, a.k, sms, kWarpsPair);
  return a.nvfp4 ? moe_launch(moe_single_token_kernel<true, 2, kWarpsPair>, grid, block, static_cast<size_t>(smem), s, a.pdl, a)
                 : moe_launch(moe_single_token_kernel<false, 2, kWarpsPair>, grid, block, static_cast<size_t>(smem), s, a.pdl, a);
}

}  // namespace fp4moe::cuda
