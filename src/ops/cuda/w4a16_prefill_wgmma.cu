// W4A16 prefill kernel on Hopper's warpgroup MMA (wgmma, sm_90a):
//   y[m][n] = alpha * g(n) * sum_k x[m][k] * w~[n][k].
//
// Both operands come from shared memory, so the tensor cores run asynchronously while the
// warps prepare the next k-tile:
//   - A (the weight): each warp dequantizes its own 16-row strip of the k-tile (the repacked
//     layout gives a lane exactly its 8 codes per k16 step, see w4a16_layout.h) and stores the
//     bf16 values into its warpgroup's 64 x 64 A tile, double-buffered (tile kt % 2).
//   - B (the activations): cp.async into the canonical K-major 128-byte swizzled layout
//     (row = token, 128 bytes = 64 k; 16-byte chunk c of row r stored at c ^ (r % 8)); the A
//     tiles use the same layout. Matrix descriptors describe both to the tensor cores.
//   CTA tile: 128 weight rows (2 warpgroups x 64) x 128 tokens x 64 k; m64n128k16 per
//   warpgroup per k16 step; 64 fp32 accumulators per thread.
//   Pipeline: 6 stages of cp.async (activations, weight codes, scales), prefetch distance 4.
//   Iteration kt: wait for tile kt, barrier, issue the copies of tile kt+4 into the stage
//   that tile kt-2 used, dequantize tile kt into A buffer kt % 2, fence.proxy.async and a
//   warpgroup barrier, issue the 4 wgmma of tile kt, then wgmma.wait_group 1 (the wgmma of
//   kt-1 done): dequantization of tile kt+1 overlaps the tensor cores' work on tile kt.
//   The fp32 accumulation order over k is the same as before (k16 steps in order).
#include <cuda_bf16.h>

#include "ops/cuda/w4a16_common.cuh"
#include "ops/cuda/w4a16_kernels.h"

namespace fp4moe::cuda {
namespace {

using detail::a_fragment;

constexpr int kThreads = 256;  // two warpgroups
constexpr int kStages = 6;  // ~130 KB: enough tiles in flight to cover L2/HBM latency at tensor-core speed
constexpr int kBM = 128;       // tokens per CTA (wgmma N)
constexpr int kBN = 128;       // weight rows per CTA
constexpr int kStrips = kBN / kTileRows;
constexpr int kXStageBytes = kBM * 128;  // 128 tokens x 64 k bf16, swizzled
constexpr int kWStageBytes = kStrips * kTileCodeBytes;
constexpr int kSStageBytes = kStrips * kNvScaleBytesPerTile;
constexpr int kStageBytes = (kXStageBytes + kWStageBytes + kSStageBytes + 1023) / 1024 * 1024;
constexpr int kATileBytes = 64 * 128;  // one warpgroup's 64 rows x 64 k of dequantized bf16, swizzled
constexpr int kSmemBytes = kStages * kStageBytes + 4 * kATileBytes + 1024;  // A: 2 buffers x 2 warpgroups; + alignment slack
constexpr int kRasterGroup = 16;
static_assert(kStageBytes % 1024 == 0, "each stage's activation tile starts 1024-byte aligned (128B swizzle atom)");
static_assert(kThreads / 32 == kStrips, "one strip per warp");

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}

// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((addr & 0x3FFFF) >> 4);  // start address
  d |= static_cast<uint64_t>(1) << 16;                // leading byte offset (unused for swizzled K-major)
  d |= static_cast<uint64_t>(1024 >> 4) << 32;        // stride byte offset: next 8 rows
  d |= static_cast<uint64_t>(1) << 62;                // 128-byte swizzle
  return d;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); }
__device__ __forceinline__ void st_shared32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
// Keeps the compiler from reusing or moving a register the tensor cores still read/write.
__device__ __forceinline__ void reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// D[64 x 128] += A[64 x 16] . B[16 x 128], both from shared memory (descriptors, K-major).
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
      "%64, %65, 1, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b));
}

template <bool NV>
__global__ void __launch_bounds__(kThreads, 1) w4a16_prefill_wgmma_kernel(const W4Args a) {
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t sbase = (raw + 1023u) & ~1023u;
  uint8_t* const gbase = smem_raw + (sbase - raw);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q = lane % 4;
  const int wg = warp / 4, wr = warp % 4;  // warpgroup, warp within it

  const int64_t row_tiles = (a.n + kBN - 1) / kBN, tok_tiles = (a.m + kBM - 1) / kBM;
  const int64_t bid = blockIdx.x;
  const int64_t per_group = kRasterGroup * tok_tiles;
  const int64_t first_row_tile = (bid / per_group) * kRasterGroup;
  const int64_t gsize = row_tiles - first_row_tile < kRasterGroup ? row_tiles - first_row_tile : kRasterGroup;
  const int64_t in_grp = bid % per_group;
  const int64_t row_tile = first_row_tile + in_grp % gsize;
  const int64_t tok0 = (in_grp / gsize) * kBM;
  const int64_t strips = (a.n + kTileRows - 1) / kTileRows;
  const int64_t strip0 = row_tile * kStrips;
  const int scale_tile_bytes = NV ? kNvScaleBytesPerTile : kMxScaleBytesPerTile;

  // The copies of one k-tile, with every per-thread address computed once here: the loop
  // only adds kt times the tile stride (64-bit index math per copy would otherwise make the
  // main loop instruction-issue bound).
  constexpr int kXCopies = kBM * 8 / kThreads;  // 16-byte chunks of activations per thread
  static_assert(kBM * 8 % kThreads == 0 && kStrips * 32 == kThreads, "one code chunk per thread");
  const __nv_bfloat16* xsrc[kXCopies];
  uint32_t xdst[kXCopies];
  int xk[kXCopies];  // the chunk's first k within the tile; -1 past the last token
#pragma unroll
  for (int i = 0; i < kXCopies; ++i) {
    const int v = threadIdx.x + i * kThreads, r = v / 8, c = v % 8;
    const bool row_ok = tok0 + r < a.m;
    xsrc[i] = a.x + (row_ok ? (tok0 + r) * a.k + c * 8 : 0);
    xdst[i] = static_cast<uint32_t>(r * 128 + ((c ^ (r & 7)) * 16));
    xk[i] = row_ok ? c * 8 : -1;
  }
  const int wstrip = threadIdx.x / 32;
  const bool w_ok = strip0 + wstrip < strips;
  const uint8_t* wsrc = a.codes + (w_ok ? (strip0 + wstrip) * a.ktiles * kTileCodeBytes + (threadIdx.x % 32) * 16 : 0);
  const uint32_t wdst = kXStageBytes + threadIdx.x * 16;
  const int svec = scale_tile_bytes / 16, scopies = kStrips * svec;
  const int sstrip = threadIdx.x / svec;
  const bool s_ok = threadIdx.x < scopies && strip0 + sstrip < strips;
  const uint8_t* ssrc = a.scales + (s_ok ? (strip0 + sstrip) * a.ktiles * scale_tile_bytes + (threadIdx.x % svec) * 16 : 0);
  const uint32_t sdst = kXStageBytes + kWStageBytes + threadIdx.x * 16;
  const int kdim = static_cast<int>(a.k);

  auto issue = [&](int kt, int st) {
    const uint32_t base = sbase + st * kStageBytes;
#pragma unroll
    for (int i = 0; i < kXCopies; ++i) {
      const bool ok = xk[i] >= 0 && kt * kTileK + xk[i] < kdim;
      cp_async16(base + xdst[i], ok ? xsrc[i] + kt * kTileK : a.x, ok);
    }
    cp_async16(base + wdst, w_ok ? wsrc + static_cast<int64_t>(kt) * kTileCodeBytes : a.codes, w_ok);
    if (threadIdx.x < scopies)
      cp_async16(base + sdst, s_ok ? ssrc + static_cast<int64_t>(kt) * scale_tile_bytes : a.scales, s_ok);
  };

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;

  // Byte offset, inside this warpgroup's 64-row A tile, of the bf16 pair at (row, k) (k even):
  // the same 128-byte swizzle as the activations.
  auto a_off = [](int row, int k) { return row * 128 + ((((k * 2) >> 4) ^ (row & 7)) << 4) + ((k * 2) & 15); };
  const uint32_t abase = sbase + kStages * kStageBytes + wg * kATileBytes;

  const int kts = static_cast<int>(a.ktiles);
#pragma unroll
  for (int st = 0; st < kStages - 2; ++st) {
    if (st < kts) issue(st, st);
    asm volatile("cp.async.commit_group;\n" ::);
  }
  int st = 0, fill = kStages - 2;  // stages of tiles kt and kt + kStages - 2
  for (int kt = 0; kt < kts; ++kt) {
    // Tile kt has landed (this thread's copies), and every thread is past iteration kt-1, whose
    // wgmma_wait<1> retired the wgmma of kt-2: that stage and A buffer are free again.
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kStages - 3));
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // this thread's copies -> tensor cores
    __syncthreads();
    if (kt + kStages - 2 < kts) issue(kt + kStages - 2, fill);
    asm volatile("cp.async.commit_group;\n" ::);
    fill = fill == kStages - 1 ? 0 : fill + 1;
    const uint8_t* wb = gbase + st * kStageBytes + kXStageBytes;
    const uint8_t* sb = wb + kWStageBytes;
    const uint4 codes = *reinterpret_cast<const uint4*>(wb + warp * kTileCodeBytes + lane * 16);
    uint2 sc;
    if constexpr (NV) sc = *reinterpret_cast<const uint2*>(sb + warp * kNvScaleBytesPerTile + g * 8);
    else sc = make_uint2(*reinterpret_cast<const uint32_t*>(sb + warp * kMxScaleBytesPerTile + g * 4), 0u);
    // Dequantize this warp's 16 rows x 64 k into the A tile (buffer kt % 2) of its warpgroup.
    const uint32_t ab = abase + static_cast<uint32_t>(kt & 1) * (2 * kATileBytes);
    const int r0 = wr * 16 + g;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t af[4];
      a_fragment<NV>(codes, sc, j, af);  // padded k: zero codes (w4a16_layout.h), and B is zero there too
      const int k0 = j * 16 + 2 * q;
      st_shared32(ab + a_off(r0, k0), af[0]);
      st_shared32(ab + a_off(r0 + 8, k0), af[1]);
      st_shared32(ab + a_off(r0, k0 + 8), af[2]);
      st_shared32(ab + a_off(r0 + 8, k0 + 8), af[3]);
    }
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // the A stores -> tensor cores
    asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory");   // the warpgroup's 4 strips are in place
    const uint32_t xaddr = sbase + st * kStageBytes;
    st = st == kStages - 1 ? 0 : st + 1;
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < 4; ++j) wgmma_m64n128k16_ss(acc, smem_desc(ab + j * 32), smem_desc(xaddr + j * 32));
    wgmma_commit();
    wgmma_wait1();  // the wgmma of kt-1 has finished reading its stage and A buffer
#pragma unroll
    for (int i = 0; i < 64; ++i) reg_fence(acc[i]);
  }
  wgmma_wait0();
#pragma unroll
  for (int i = 0; i < 64; ++i) reg_fence(acc[i]);
  asm volatile("cp.async.wait_group 0;\n" ::);

  // Accumulator i of this thread: weight row 16*warp + g + 8*((i/2)%2), token 8*(i/4) + 2q + i%2.
  const detail::RangeScales rs{a.range_begin, a.range_scale, a.num_ranges, a.alpha};
  const int64_t n0 = (strip0 + warp) * kTileRows + g, n1 = n0 + 8;
  const float f0 = n0 < a.n ? detail::row_factor(rs, n0) : 0.0f;
  const float f1 = n1 < a.n ? detail::row_factor(rs, n1) : 0.0f;
#pragma unroll
  for (int t = 0; t < 16; ++t)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int64_t tok = tok0 + t * 8 + 2 * q + e;
      if (tok >= a.m) continue;
      if (n0 < a.n) detail::store_out(a.y, a.y_f32, tok * a.n + n0, acc[4 * t + e] * f0);
      if (n1 < a.n) detail::store_out(a.y, a.y_f32, tok * a.n + n1, acc[4 * t + 2 + e] * f1);
    }
}

template <bool NV>
cudaError_t launch_wgmma(const W4Args& a, cudaStream_t s) {
  static bool attr_set = false;  // raised once per instantiation (before any graph capture)
  if (!attr_set) {
    const cudaError_t e =
        cudaFuncSetAttribute(w4a16_prefill_wgmma_kernel<NV>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    if (e != cudaSuccess) return e;
    attr_set = true;
  }
  const int64_t blocks = ((a.n + kBN - 1) / kBN) * ((a.m + kBM - 1) / kBM);
  w4a16_prefill_wgmma_kernel<NV><<<static_cast<unsigned>(blocks), kThreads, kSmemBytes, s>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_w4a16_prefill_wgmma(const W4Args& a, cudaStream_t s) {
  if (a.m == 0) return cudaSuccess;
  return a.nvfp4 ? launch_wgmma<true>(a, s) : launch_wgmma<false>(a, s);
}

}  // namespace fp4moe::cuda
