// W4A16 prefill kernel on Hopper's warpgroup MMA (wgmma, sm_90a):
//   y[m][n] = alpha * g(n) * sum_k x[m][k] * w~[n][k].
//
// The weight is the A operand FROM REGISTERS: each warp dequantizes its own 16-row strip
// straight into the wgmma A fragment (the repacked layout gives a lane exactly its 8 codes
// per k16 step, see w4a16_layout.h), so no dequantized weight ever touches shared memory.
// The activations are the B operand from shared memory in the canonical K-major 128-byte
// swizzled layout (row = token, 128 bytes = 64 k; 16-byte chunk c of row r stored at
// c ^ (r % 8)), described to the tensor cores by a matrix descriptor.
//   CTA tile: 128 weight rows (2 warpgroups x 64) x 128 tokens x 64 k; m64n128k16 per
//   warpgroup per k16 step; 64 fp32 accumulators per thread.
//   Pipeline: 6 stages of cp.async (activations swizzled, weight tiles, scales), then
//   fence.proxy.async so the tensor cores (async proxy) see the copies.
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
constexpr int kSmemBytes = kStages * kStageBytes + 1024;                 // + alignment slack
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
// Keeps the compiler from reusing or moving a register the tensor cores still read/write.
__device__ __forceinline__ void reg_fence(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }
__device__ __forceinline__ void reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// D[64 x 128] += A[64 x 16] (registers) . B[16 x 128] (shared memory, descriptor).
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
      "{%64,%65,%66,%67}, %68, 1, 1, 1, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}

template <bool NV>
__global__ void __launch_bounds__(kThreads, 1) w4a16_prefill_wgmma_kernel(const W4Args a) {
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t sbase = (raw + 1023u) & ~1023u;
  uint8_t* const gbase = smem_raw + (sbase - raw);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q = lane % 4;

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

  auto issue = [&](int64_t kt, int st) {
    const uint32_t base = sbase + st * kStageBytes;
    for (int v = threadIdx.x; v < kBM * 8; v += kThreads) {
      const int r = v / 8, c = v % 8;
      const int64_t tok = tok0 + r, kk = kt * kTileK + c * 8;
      const bool ok = tok < a.m && kk < a.k;
      cp_async16(base + r * 128 + ((c ^ (r & 7)) * 16), ok ? a.x + tok * a.k + kk : a.x, ok);
    }
    const uint32_t wb = base + kXStageBytes;
    for (int v = threadIdx.x; v < kStrips * 32; v += kThreads) {
      const int s = v / 32, c = v % 32;
      const bool ok = strip0 + s < strips;
      cp_async16(wb + s * kTileCodeBytes + c * 16,
                 ok ? a.codes + ((strip0 + s) * a.ktiles + kt) * kTileCodeBytes + c * 16 : a.codes, ok);
    }
    const uint32_t sb = wb + kWStageBytes;
    const int svec = scale_tile_bytes / 16;
    for (int v = threadIdx.x; v < kStrips * svec; v += kThreads) {
      const int s = v / svec, c = v % svec;
      const bool ok = strip0 + s < strips;
      cp_async16(sb + s * scale_tile_bytes + c * 16,
                 ok ? a.scales + ((strip0 + s) * a.ktiles + kt) * scale_tile_bytes + c * 16 : a.scales, ok);
    }
  };

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;

  const int64_t kts = a.ktiles;
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < kts) issue(st, st);
    asm volatile("cp.async.commit_group;\n" ::);
  }
  for (int64_t kt = 0; kt < kts; ++kt) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kStages - 2));
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // copies -> tensor-core reads
    __syncthreads();
    {
      const int64_t nk = kt + kStages - 1;
      if (nk < kts) issue(nk, static_cast<int>(nk % kStages));
      asm volatile("cp.async.commit_group;\n" ::);
    }
    const int st = static_cast<int>(kt % kStages);
    const uint8_t* wb = gbase + st * kStageBytes + kXStageBytes;
    const uint8_t* sb = wb + kWStageBytes;
    const uint4 codes = *reinterpret_cast<const uint4*>(wb + warp * kTileCodeBytes + lane * 16);
    uint2 sc;
    if constexpr (NV) sc = *reinterpret_cast<const uint2*>(sb + warp * kNvScaleBytesPerTile + g * 8);
    else sc = make_uint2(*reinterpret_cast<const uint32_t*>(sb + warp * kMxScaleBytesPerTile + g * 4), 0u);
    uint32_t af[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      a_fragment<NV>(codes, sc, j, af[j]);
      if (kt * kTileK + j * 16 >= a.k) af[j][0] = af[j][1] = af[j][2] = af[j][3] = 0u;  // padded k: B is zero too
    }
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) reg_fence(af[j][r]);
    const uint32_t xaddr = sbase + st * kStageBytes;
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < 4; ++j) wgmma_m64n128k16(acc, af[j], smem_desc(xaddr + j * 32));
    wgmma_commit();
    wgmma_wait0();
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) reg_fence(af[j][r]);
#pragma unroll
    for (int i = 0; i < 64; ++i) reg_fence(acc[i]);
  }
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
