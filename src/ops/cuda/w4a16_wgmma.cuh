// The Hopper wgmma mainloop of the W4A16 prefill kernels (the linear, w4a16_prefill_wgmma.cu,
// and the grouped MoE GEMM, moe_grouped_wgmma.cu), sm_90a.
//
// Both operands come from shared memory, so the tensor cores run asynchronously while the
// warps prepare the next k-tile:
//   - A (the weight): each warp dequantizes its own SPW 16-row strips of the k-tile (the
//     repacked layout gives a lane exactly its 8 codes per k16 step, see w4a16_layout.h) and
//     stores the bf16 values into its warpgroup's (64 SPW) x 64 A tile, double-buffered
//     (tile kt % 2).
//   - B (the activations): cp.async into the canonical K-major 128-byte swizzled layout
//     (row = token, 128 bytes = 64 k; 16-byte chunk c of row r stored at c ^ (r % 8)); the A
//     tiles use the same layout. Matrix descriptors describe both to the tensor cores.
//   CTA tile: 128 SPW weight rows (2 warpgroups x SPW m64 blocks) x BM tokens x 64 k.
//   The linear: SPW = 1, BM = 128 or 256 (the launcher takes 256 when the tokens fill the
//   wave with it: twice the tensor work per dequantized tile); m64nBMk16 per warpgroup per
//   k16 step; BM/2 fp32 accumulators per thread.
//   The MoE kernel runs wgmma_mainloop_rs below: SPW = 2 with the weights from registers,
//   BM = 128 or 96; per k16 step each warpgroup issues two m64nBMk16 (its two m64 blocks) on
//   the same activation tile, so one activation tile (copies, barrier, fences) serves 256
//   weight rows; 2 x BM/2 fp32 accumulators per thread.
//   Pipeline: S stages of cp.async (activations, weight codes, scales; S = 6 at BM <= 128, 5
//   at 256), prefetch distance S-2.
//   Iteration kt: wait for tile kt, barrier, issue the copies of tile kt+S-2 into the stage
//   that tile kt-2 used, dequantize tile kt into A buffer kt % 2, fence.proxy.async and a
//   warpgroup barrier, issue the 4 SPW wgmma of tile kt, then wgmma.wait_group 1 (the wgmma
//   of kt-1 done): dequantization of tile kt+1 overlaps the tensor cores' work on tile kt.
//   The fp32 accumulation of every output element runs over the k16 steps in order, the same
//   sequence whatever SPW and BM are.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "ops/cuda/w4a16_common.cuh"

namespace fp4moe::cuda::wgmma {

constexpr int kThreads = 256;  // two warpgroups
constexpr int kBN = 128;       // weight rows per CTA of the linear (SPW = 1)
constexpr int kStrips = kBN / kTileRows;
constexpr int kWStageBytes = kStrips * kTileCodeBytes;
constexpr int kSStageBytes = kStrips * kNvScaleBytesPerTile;
constexpr int kATileBytes = 64 * 128;  // one m64 block: 64 rows x 64 k of dequantized bf16, swizzled
constexpr int kRasterGroup = 16;
static_assert(kThreads / 32 == kStrips, "one strip per warp");

// Staging tiles of the epilogues: [tokens][cols] bf16, rows out_pitch(cols) bytes apart.
constexpr int out_pitch(int cols) { return cols * 2 + 16; }

// BM tokens x (128 SPW) weight rows: SPW strips per warp.
// Stage layout: activations [BM][128 B], codes [strip slot][512 B], scales [slot][scale tile];
// slot s * 8 + warp is warp's strip s (rows 64 s + 16 (warp % 4) of warpgroup warp / 4's A tile).
template <int BM, int SPW = 1>
struct Tile {
  static constexpr int kStrips = 8 * SPW;                 // strips (16 rows) per CTA
  static constexpr int kRows = kStrips * kTileRows;       // weight rows per CTA
  static constexpr int kWStageBytes = kStrips * kTileCodeBytes;
  static constexpr int kSStageBytes = kStrips * kNvScaleBytesPerTile;
  static constexpr int kABytes = SPW * kATileBytes;       // one warpgroup's A tile (one buffer)
  static constexpr int kStages = BM <= 128 ? 6 : 5;       // as many as fit beside the A tiles
  static constexpr int kXStageBytes = BM * 128;           // BM tokens x 64 k bf16, swizzled
  static constexpr int kStageBytes = (kXStageBytes + kWStageBytes + kSStageBytes + 1023) / 1024 * 1024;
  static constexpr int kSmemBytes = kStages * kStageBytes + 4 * kABytes + 1024;  // A: 2 buffers x 2 warpgroups; + alignment
  static constexpr int kXCopies = BM * 8 / kThreads;  // 16-byte activation chunks per thread per tile
  static_assert(SPW == 1 || SPW == 2, "one or two strips per warp");
  static_assert(kStageBytes % 1024 == 0, "each stage's activation tile starts 1024-byte aligned (128B swizzle atom)");
  static_assert(kSmemBytes <= 227 * 1024, "fits in an SM's shared memory");
  static_assert(BM * out_pitch(kRows) + SPW * 32 * 1024 <= kStages * kStageBytes,
                "the epilogues' staging tiles fit in the stages");
  static_assert(BM * 8 % kThreads == 0 && 8 * 32 == kThreads, "whole activation chunks; SPW code chunks per thread");
};

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
// Four 8x8 bf16 blocks to shared memory; lane l holds (row l/4, cols 2(l%4)..+1) of each
// block (the mma fragment layout) and gives the address of row l % 8 of block l / 8.
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, const uint32_t (&r)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r[0]), "r"(r[1]),
               "r"(r[2]), "r"(r[3])
               : "memory");
}
// Keeps the compiler from reusing or moving a register the tensor cores still read/write.
__device__ __forceinline__ void reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void reg_fence_u32(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }

// D[64 x 128] += A[64 x 16] . B[16 x 128], both from shared memory (descriptors, K-major).
__device__ __forceinline__ void wgmma_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
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

// D[64 x 256] += A[64 x 16] . B[16 x 256], both from shared memory (descriptors, K-major).
__device__ __forceinline__ void wgmma_ss(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, "
      "%128, %129, 1, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(desc_a), "l"(desc_b));
}

// D[64 x 96] += A[64 x 16] . B[16 x 96], A from registers (each warp's 16 rows as the
// m16n8k16 A fragment), B from shared memory (descriptor, K-major).
__device__ __forceinline__ void wgmma_rs(float (&d)[48], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47}, "
      "{%48, %49, %50, %51}, %52, 1, 1, 1, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

// D[64 x 128] += A[64 x 16] . B[16 x 128], A from registers (each warp's 16 rows as the
// m16n8k16 A fragment), B from shared memory (descriptor, K-major).
__device__ __forceinline__ void wgmma_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
      "{%64, %65, %66, %67}, %68, 1, 1, 1, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

// The k-loop of one CTA tile: 128 SPW weight rows (this CTA's 8 SPW strips) x BM tokens, all
// of k. Inputs, per thread (the caller computes them once):
//   xrow[i]    the activation row of this thread's chunk i (token row threadIdx.x/8 + 32 i of
//              the tile), already offset by its 16-byte column (threadIdx.x % 8) * 8; null
//              past the last token;
//   wstrip[s]  the global strip (16 rows) of slot s * 8 + warp, this warp's strip s, whose
//              codes this thread copies and dequantizes, or -1 when it is past the matrix
//              (zeros);
//   sstrip     the strip of the scale chunk this thread copies (slot threadIdx.x / (scale
//              tile / 16)), or -1; threads past the 8 SPW slots' scale chunks copy none.
// codes/scales: the matrix's repacked tiles (strip-major, ktiles per strip).
// acc (SPW x BM/2 per thread): accumulator s * BM/2 + i holds row 16 * (warp % 4) + g +
// 8 * ((i/2)%2) of m64 block s of warpgroup warp / 4 (the rows of slot s * 8 + warp), token
// 8*(i/4) + 2q + i%2, unscaled (times 2^-62 relative to the real product: the epilogue
// multiplies by the per-row factor).
template <int BM, bool NV, int SPW>
__device__ __forceinline__ void wgmma_mainloop(const __nv_bfloat16* const (&xrow)[Tile<BM, SPW>::kXCopies],
                                               const int64_t (&wstrip)[SPW], int64_t sstrip, const uint8_t* codes,
                                               const uint8_t* scales, int64_t ktiles, int64_t k,
                                               const __nv_bfloat16* any_x, float (&acc)[SPW * BM / 2]) {
  using T = Tile<BM, SPW>;
  constexpr int kStages = T::kStages, kStageBytes = T::kStageBytes, kXStageBytes = T::kXStageBytes;
  constexpr int kAcc = BM / 2;  // accumulators per m64 block
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t sbase = (raw + 1023u) & ~1023u;
  uint8_t* const gbase = smem_raw + (sbase - raw);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int wg = warp / 4, wr = warp % 4;  // warpgroup, warp within it
  constexpr int kScaleTile = NV ? kNvScaleBytesPerTile : kMxScaleBytesPerTile;
  constexpr int kSvec = kScaleTile / 16, kScopies = T::kStrips * kSvec;

  // Per-thread copy addresses, computed once: the loop only adds kt times the tile stride
  // (64-bit index math per copy would make the loop instruction-issue bound).
  const int xr0 = threadIdx.x / 8, xc = threadIdx.x % 8;
  const uint32_t xdst = static_cast<uint32_t>(xr0 * 128 + ((xc ^ (xr0 & 7)) * 16));
  bool w_ok[SPW];
  const uint8_t* wsrc[SPW];
#pragma unroll
  for (int s = 0; s < SPW; ++s) {
    w_ok[s] = wstrip[s] >= 0;
    wsrc[s] = codes + (w_ok[s] ? wstrip[s] * ktiles * kTileCodeBytes + lane * 16 : 0);
  }
  const uint32_t wdst = kXStageBytes + threadIdx.x * 16;  // slot s: + s * kThreads * 16
  const bool s_ok = threadIdx.x < kScopies && sstrip >= 0;
  const uint8_t* ssrc = scales + (s_ok ? sstrip * ktiles * kScaleTile + (threadIdx.x % kSvec) * 16 : 0);
  const uint32_t sdst = kXStageBytes + T::kWStageBytes + threadIdx.x * 16;
  const int kdim = static_cast<int>(k);

  auto issue = [&](int kt, int st) {
    const uint32_t base = sbase + st * kStageBytes;
    const bool k_ok = kt * kTileK + xc * 8 < kdim;
#pragma unroll
    for (int i = 0; i < T::kXCopies; ++i) {
      const bool ok = k_ok && xrow[i] != nullptr;
      cp_async16(base + xdst + i * 32 * 128, ok ? xrow[i] + kt * kTileK : any_x, ok);
    }
#pragma unroll
    for (int s = 0; s < SPW; ++s)
      cp_async16(base + wdst + s * kThreads * 16, w_ok[s] ? wsrc[s] + static_cast<int64_t>(kt) * kTileCodeBytes : codes,
                 w_ok[s]);
    if (threadIdx.x < kScopies)
      cp_async16(base + sdst, s_ok ? ssrc + static_cast<int64_t>(kt) * kScaleTile : scales, s_ok);
  };

#pragma unroll
  for (int i = 0; i < SPW * kAcc; ++i) acc[i] = 0.0f;

  // The A tiles use the activations' 128-byte swizzle: 16-byte chunk c of row r at c ^ (r % 8).
  // A region: [buffer][warpgroup][m64 block s], kATileBytes each.
  const uint32_t abase = sbase + kStages * kStageBytes + wg * T::kABytes;
  // stmatrix row addresses: lane l gives row l % 8 of 8x8 block l / 8; blocks 0..3 of a k16
  // step are (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) of
  // the warp's strip, the A fragment's register order. Chunk (2j + half) of the row, swizzled.
  const int st_r = wr * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
  const uint32_t st_row = static_cast<uint32_t>(st_r * 128);
  const int st_half = lane >> 4, st_swz = st_r & 7;

  const int kts = static_cast<int>(ktiles);
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
    const uint8_t* sb = wb + T::kWStageBytes;
    uint4 cw[SPW];
    uint2 sc[SPW];
#pragma unroll
    for (int s = 0; s < SPW; ++s) {
      const int slot = s * 8 + warp;
      cw[s] = *reinterpret_cast<const uint4*>(wb + slot * kTileCodeBytes + lane * 16);
      if constexpr (NV) sc[s] = *reinterpret_cast<const uint2*>(sb + slot * kNvScaleBytesPerTile + g * 8);
      else sc[s] = make_uint2(*reinterpret_cast<const uint32_t*>(sb + slot * kMxScaleBytesPerTile + g * 4), 0u);
    }
    // Dequantize this warp's strips (16 rows x 64 k each) into the A tile (buffer kt % 2) of
    // its warpgroup, strip s into m64 block s: per k16 step, the four 8x8 blocks of the A
    // fragment by one stmatrix.x4.
    const uint32_t ab = abase + static_cast<uint32_t>(kt & 1) * (2 * T::kABytes);
#pragma unroll
    for (int s = 0; s < SPW; ++s) {
      uint32_t sw[4];
      detail::tile_scales<NV>(sc[s], sw);
      // padded k: zero codes (w4a16_layout.h), and B is zero there too
      auto step = [&](auto jc) {
        constexpr int j = decltype(jc)::value;
        uint32_t af[4];
        detail::a_fragment_fast<NV, j>(cw[s], sw, af);
        stmatrix_x4(ab + s * kATileBytes + st_row + ((((2 * j) | st_half) ^ st_swz) << 4), af);
      };
      step(std::integral_constant<int, 0>{});
      step(std::integral_constant<int, 1>{});
      step(std::integral_constant<int, 2>{});
      step(std::integral_constant<int, 3>{});
    }
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // the A stores -> tensor cores
    asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory");   // the warpgroup's strips are in place
    const uint32_t xaddr = sbase + st * kStageBytes;
    st = st == kStages - 1 ? 0 : st + 1;
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int s = 0; s < SPW; ++s)
        wgmma_ss(*reinterpret_cast<float(*)[kAcc]>(acc + s * kAcc), smem_desc(ab + s * kATileBytes + j * 32),
                 smem_desc(xaddr + j * 32));
    wgmma_commit();
    wgmma_wait1();  // the wgmma of kt-1 has finished reading its stage and A buffer
#pragma unroll
    for (int i = 0; i < SPW * kAcc; ++i) reg_fence(acc[i]);
  }
  wgmma_wait0();
#pragma unroll
  for (int i = 0; i < SPW * kAcc; ++i) reg_fence(acc[i]);
  asm volatile("cp.async.wait_group 0;\n" ::);
}

// One strip per warp (the linear): wstrip is the warp's own strip.
template <int BM, bool NV>
__device__ __forceinline__ void wgmma_mainloop(const __nv_bfloat16* const (&xrow)[Tile<BM>::kXCopies], int64_t wstrip,
                                               int64_t sstrip, const uint8_t* codes, const uint8_t* scales,
                                               int64_t ktiles, int64_t k, const __nv_bfloat16* any_x,
                                               float (&acc)[BM / 2]) {
  const int64_t ws[1] = {wstrip};
  wgmma_mainloop<BM, NV, 1>(xrow, ws, sstrip, codes, scales, ktiles, k, any_x, acc);
}

// ---- the register-A k-loop (the grouped MoE kernel) ---------------------------------------
// wgmma_mainloop's pipeline and roles with the weight operand taken from registers (wgmma with
// A in registers): each warp dequantizes its two strips' A fragments of a k-tile (the
// repacked layout gives a lane exactly the m16n8k16 A fragment of its warp's 16 rows, which is
// a warp's slice of the m64 A operand) and hands them to the tensor cores directly. The weights
// never pass through shared memory: no A tile stores, no A operand reads, no warpgroup barrier
// or proxy fence for them, ~64 KB less shared-memory traffic per 64-k tile (of ~160 KB at 128
// tokens). Two register sets of fragments alternate between consecutive k-tiles: the set of
// tile kt is rewritten by tile kt + 2, after tile kt + 1's wgmma.wait_group 1 has retired tile
// kt's wgmma. Products and k order are the shared-memory loop's (the same bits).
// Stage layout as Tile<BM, 2>: activations [BM][128 B], codes [slot][512 B], scales [slot][scale tile].
template <int BM>
struct RsTile {
  static constexpr int kStrips = 16;                 // two per warp
  static constexpr int kRows = kStrips * kTileRows;  // 256 weight rows per CTA
  static constexpr int kWStageBytes = kStrips * kTileCodeBytes;
  static constexpr int kSStageBytes = kStrips * kNvScaleBytesPerTile;
  static constexpr int kStages = 6;
  static constexpr int kXStageBytes = BM * 128;
  static constexpr int kStageBytes = (kXStageBytes + kWStageBytes + kSStageBytes + 1023) / 1024 * 1024;
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024;  // + alignment
  static constexpr int kXCopies = BM * 8 / kThreads;
  static_assert(BM == 96 || BM == 128, "the MoE kernel's token tiles");
  static_assert(kStageBytes % 1024 == 0 && kSmemBytes <= 227 * 1024, "aligned stages that fit an SM");
  static_assert(BM * 8 % kThreads == 0, "whole activation chunks per thread");
};

// Arguments and accumulator layout as wgmma_mainloop<BM, NV, 2>.
template <int BM, bool NV>
__device__ __forceinline__ void wgmma_mainloop_rs(const __nv_bfloat16* const (&xrow)[RsTile<BM>::kXCopies],
                                                  const int64_t (&wstrip)[2], int64_t sstrip, const uint8_t* codes,
                                                  const uint8_t* scales, int64_t ktiles, int64_t k,
                                                  const __nv_bfloat16* any_x, float (&acc)[BM]) {
  using T = RsTile<BM>;
  constexpr int kStages = T::kStages, kStageBytes = T::kStageBytes, kXStageBytes = T::kXStageBytes;
  constexpr int kAcc = BM / 2;  // accumulators per m64 block
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t sbase = (raw + 1023u) & ~1023u;
  uint8_t* const gbase = smem_raw + (sbase - raw);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4;
  constexpr int kScaleTile = NV ? kNvScaleBytesPerTile : kMxScaleBytesPerTile;
  constexpr int kSvec = kScaleTile / 16, kScopies = T::kStrips * kSvec;

  const int xr0 = threadIdx.x / 8, xc = threadIdx.x % 8;
  const uint32_t xdst = static_cast<uint32_t>(xr0 * 128 + ((xc ^ (xr0 & 7)) * 16));
  bool w_ok[2];
  const uint8_t* wsrc[2];
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    w_ok[s] = wstrip[s] >= 0;
    wsrc[s] = codes + (w_ok[s] ? wstrip[s] * ktiles * kTileCodeBytes + lane * 16 : 0);
  }
  const uint32_t wdst = kXStageBytes + threadIdx.x * 16;  // slot s: + s * kThreads * 16
  const bool s_ok = threadIdx.x < kScopies && sstrip >= 0;
  const uint8_t* ssrc = scales + (s_ok ? sstrip * ktiles * kScaleTile + (threadIdx.x % kSvec) * 16 : 0);
  const uint32_t sdst = kXStageBytes + T::kWStageBytes + threadIdx.x * 16;
  const int kdim = static_cast<int>(k);

  auto issue = [&](int kt, int st) {
    const uint32_t base = sbase + st * kStageBytes;
    const bool k_ok = kt * kTileK + xc * 8 < kdim;
#pragma unroll
    for (int i = 0; i < T::kXCopies; ++i) {
      const bool ok = k_ok && xrow[i] != nullptr;
      cp_async16(base + xdst + i * 32 * 128, ok ? xrow[i] + kt * kTileK : any_x, ok);
    }
#pragma unroll
    for (int s = 0; s < 2; ++s)
      cp_async16(base + wdst + s * kThreads * 16, w_ok[s] ? wsrc[s] + static_cast<int64_t>(kt) * kTileCodeBytes : codes,
                 w_ok[s]);
    if (threadIdx.x < kScopies)
      cp_async16(base + sdst, s_ok ? ssrc + static_cast<int64_t>(kt) * kScaleTile : scales, s_ok);
  };

#pragma unroll
  for (int i = 0; i < 2 * kAcc; ++i) acc[i] = 0.0f;

  const int kts = static_cast<int>(ktiles);
#pragma unroll
  for (int st = 0; st < kStages - 2; ++st) {
    if (st < kts) issue(st, st);
    asm volatile("cp.async.commit_group;\n" ::);
  }
  int st = 0, fill = kStages - 2;  // stages of tiles kt and kt + kStages - 2
  // One k-tile with fragment set af ([strip][k16 step][register]).
  auto tile = [&](int kt, uint32_t (&af)[2][4][4]) {
    // Tile kt has landed (this thread's copies), and every thread is past tile kt-1, whose
    // wgmma_wait1 retired the wgmma of kt-2: that stage (and fragment set af) is free again.
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kStages - 3));
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // this thread's copies -> tensor cores
    __syncthreads();
    if (kt + kStages - 2 < kts) issue(kt + kStages - 2, fill);
    asm volatile("cp.async.commit_group;\n" ::);
    fill = fill == kStages - 1 ? 0 : fill + 1;
    const uint8_t* wb = gbase + st * kStageBytes + kXStageBytes;
    const uint8_t* sb = wb + T::kWStageBytes;
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int slot = s * 8 + warp;
      const uint4 cw = *reinterpret_cast<const uint4*>(wb + slot * kTileCodeBytes + lane * 16);
      uint2 sc;
      if constexpr (NV) sc = *reinterpret_cast<const uint2*>(sb + slot * kNvScaleBytesPerTile + g * 8);
      else sc = make_uint2(*reinterpret_cast<const uint32_t*>(sb + slot * kMxScaleBytesPerTile + g * 4), 0u);
      uint32_t sw[4];
      detail::tile_scales<NV>(sc, sw);
      // padded k: zero codes (w4a16_layout.h), and B is zero there too
      detail::a_fragment_fast<NV, 0>(cw, sw, af[s][0]);
      detail::a_fragment_fast<NV, 1>(cw, sw, af[s][1]);
      detail::a_fragment_fast<NV, 2>(cw, sw, af[s][2]);
      detail::a_fragment_fast<NV, 3>(cw, sw, af[s][3]);
    }
    const uint32_t xaddr = sbase + st * kStageBytes;
    st = st == kStages - 1 ? 0 : st + 1;
    // The fragments are complete before the fence (the compiler may not sink their
    // arithmetic past it: a register written inside the wgmma group serializes the group).
#pragma unroll
    for (int s = 0; s < 2; ++s)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) reg_fence_u32(af[s][j][r]);
    wgmma_fence();  // the fragments just written -> the tensor cores
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int s = 0; s < 2; ++s)
        wgmma_rs(*reinterpret_cast<float(*)[kAcc]>(acc + s * kAcc), af[s][j], smem_desc(xaddr + j * 32));
    wgmma_commit();
    wgmma_wait1();  // the wgmma of kt-1 has finished reading its stage and fragment set
#pragma unroll
    for (int i = 0; i < 2 * kAcc; ++i) reg_fence(acc[i]);
  };
  uint32_t af0[2][4][4], af1[2][4][4];
  // Pairs of tiles, then an odd last one: no path reaches a tile writing af0 while a group
  // reading af0 may be in flight (a conditional second tile inside the loop would make ptxas
  // serialize every wgmma: C7513).
  int kt = 0;
  for (; kt + 1 < kts; kt += 2) {
    tile(kt, af0);
    tile(kt + 1, af1);
  }
  if (kt < kts) tile(kt, af0);
  wgmma_wait0();
#pragma unroll
  for (int i = 0; i < 2 * kAcc; ++i) reg_fence(acc[i]);
  asm volatile("cp.async.wait_group 0;\n" ::);
}

// The CTA's 1024-aligned shared-memory base (the pipeline stages; free for an epilogue once
// every thread is past wgmma_mainloop and a barrier).
__device__ __forceinline__ uint8_t* smem_tile_base() {
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  return smem_raw + (((raw + 1023u) & ~1023u) - raw);
}

// Output tiles go through shared memory so that the global stores are whole 16-byte row
// segments (straight from the accumulator layout they would be 2-byte stores, rows apart).
// Staging tile of the linear: [tokens][up to 128 columns] bf16, rows kOutPitch bytes apart.
inline constexpr int kOutPitch = out_pitch(128);

// The accumulators of one m64 block (BM/2 per thread) times f0 (row g of the warp's strip) or
// f1 (row g + 8), rounded to bf16, at column col + g (+ 8) of a staging tile of kPitch bytes
// per token.
template <int BM, int kPitch>
__device__ __forceinline__ void stage_block_bf16(const float* acc, float f0, float f1, int col, uint8_t* tile) {
  const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
#pragma unroll
  for (int t = 0; t < BM / 8; ++t)
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      const int tok = 8 * t + 2 * q + (h & 1), c = col + g + (h >> 1) * 8;
      *reinterpret_cast<__nv_bfloat16*>(tile + tok * kPitch + c * 2) = __float2bfloat16_rn(acc[4 * t + h] * (h < 2 ? f0 : f1));
    }
}

// The linear's tile (one strip per warp): column 16 * warp (+ g, + 8) of the staging tile.
template <int BM>
__device__ __forceinline__ void stage_acc_bf16(const float (&acc)[BM / 2], float f0, float f1, uint8_t* tile) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
#pragma unroll
  for (int t = 0; t < BM / 8; ++t)
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      const int tok = 8 * t + 2 * q + (h & 1), col = 16 * warp + g + (h >> 1) * 8;
      *reinterpret_cast<__nv_bfloat16*>(tile + tok * kOutPitch + col * 2) = __float2bfloat16_rn(acc[4 * t + h] * (h < 2 ? f0 : f1));
    }
}

// Copies columns [0, cols) (a multiple of 8) of tokens [0, rows) of a staging tile of kCols
// columns (rows out_pitch(kCols) bytes apart) to dst(r), the 16-byte aligned start of token
// r's output segment, in 16-byte pieces.
template <int kCols = 128, class Dst>
__device__ __forceinline__ void store_tile(const uint8_t* tile, int rows, int cols, Dst dst) {
  constexpr int kPitch = out_pitch(kCols), kRowChunks = kCols / 8;
  const int chunks = cols / 8;
  for (int v = threadIdx.x; v < rows * kRowChunks; v += kThreads) {
    const int r = v / kRowChunks, c = v % kRowChunks;
    if (c < chunks) *reinterpret_cast<uint4*>(dst(r) + c * 8) = *reinterpret_cast<const uint4*>(tile + r * kPitch + c * 16);
  }
}

// Raises the dynamic shared-memory limit of a kernel that runs wgmma_mainloop<BM, NV, SPW>.
template <int BM, int SPW = 1, class Kernel>
cudaError_t raise_wgmma_smem(Kernel kernel) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile<BM, SPW>::kSmemBytes);
}

}  // namespace fp4moe::cuda::wgmma
