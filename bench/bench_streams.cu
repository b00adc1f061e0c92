// The read-pattern benchmark behind the one-token MoE kernel's bound (notes/gpu-notes.md, "Where
// issue 5 stands after step 62"): the same bytes read
//   - as one sweep (read_roof_kernel, the floor's kernel: neighbouring threads read neighbouring
//     16-byte words, the grid strides over everything), and
//   - as S independent streams, one per warp, each a contiguous region read in 512-byte warp
//     requests (16 bytes per lane, evict-first) through a ring of D requests in flight (a slot is
//     refilled as soon as it is consumed), the way the one-token kernel's ~1800-2100 strip units
//     read their weights (one 512-byte code request per k-tile).
//   - as C per-CTA contiguous regions (a second table, notes step 64): "group", the CTA's W
//     warps read W neighbouring 512-byte pieces per step, D in flight per warp; "bulk", one
//     thread fills a ring of R shared-memory stages by one cp.async.bulk each and the W warps
//     read and release them (the pattern of a one-token kernel that reads one strip group of
//     the weights per CTA).
// If the streams fall below the sweep as S grows, at every D, the pattern bounds the T = 1 layer
// whatever its arithmetic. Each call reads at its own offset of a buffer 4x the bytes (no call
// finds the previous one's bytes in L2); median of 7 repeats (bench_common.cuh).
//
//   bench_streams [--mb 88] [--streams 132,264,528,1056,1792,2112,4224] [--depth 1,2,4,8]
//                 [--warps-per-cta 8] [--ctas 132,224,264] [--cta-warps 8,16]
//                 [--stage-ktiles 1,2,4] [--stages 2,4,6]
//   (a bulk stage is stage-ktiles x cta-warps x 512 bytes; rows whose ring exceeds 200 KB are left out)
//   88 MB: V4-Flash's one-token weight bytes (6 routed + 1 shared expert).
#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.cuh"

using fp4moe::cuda::check_cuda;
using fp4moe::cuda::DeviceBuffer;

namespace {

constexpr int kReqWords = 32;  // 16-byte words per 512-byte warp request

// One warp's reads: reqs pieces of 512 bytes, piece i at p + i * step (16-byte words; lane l's
// word of the piece at + l), through a ring of D pieces in flight (a slot is refilled as soon as
// it is consumed); returns the xor of everything read.
template <int D>
__device__ __forceinline__ uint32_t ring_read(const uint4* p, int64_t reqs, int64_t step) {
  uint4 r[D];
#pragma unroll
  for (int d = 0; d < D; ++d) r[d] = d < reqs ? __ldcs(p + d * step) : make_uint4(0, 0, 0, 0);
  uint32_t acc = 0;
  for (int64_t i = 0; i < reqs; i += D) {
#pragma unroll
    for (int d = 0; d < D; ++d) {
      if (i + d >= reqs) break;
      const uint4 v = r[d];
      if (i + D + d < reqs) r[d] = __ldcs(p + (i + D + d) * step);
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
  }
  return acc;
}

// Warp w reads words [w * per_stream, (w + 1) * per_stream) of base in requests of 32 words.
template <int D>
__global__ void stream_read_kernel(const uint4* base, int64_t per_stream, int streams, unsigned* sink) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (warp >= streams) return;
  const uint32_t acc = ring_read<D>(base + warp * per_stream + lane, per_stream / kReqWords, kReqWords);
  if (acc == 0x12345678u) sink[warp] = acc;  // practically never taken
}

// The CTA-contiguous patterns a one-token kernel could read with (notes step 64): CTA c reads
// its own contiguous region, and at each step its W warps read W neighbouring 512-byte pieces,
// so the bytes the GPU reads at one moment are ~ctas contiguous windows, not ~ctas x W.
// group: warp w of the CTA reads piece i * W + w of the region, D pieces in flight per warp
//   (the stream ring above, the warps of a CTA not synchronized with each other).
template <int D>
__global__ void group_read_kernel(const uint4* base, int64_t per_cta, unsigned* sink) {
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int W = static_cast<int>(blockDim.x / 32);
  const uint4* p = base + blockIdx.x * per_cta + warp * kReqWords + lane;
  const uint32_t acc = ring_read<D>(p, per_cta / kReqWords / W, static_cast<int64_t>(W) * kReqWords);
  if (acc == 0x12345678u) sink[blockIdx.x] = acc;  // practically never taken
}

// bulk: one thread of the CTA fills a ring of R shared-memory stages of `stage` bytes each by
// one cp.async.bulk per stage (completing on the stage's full barrier); every warp waits for
// the stage, reads its W-th of it (16 bytes per lane per 512-byte piece) and arrives on the
// stage's empty barrier; the stage is refilled once all W warps have arrived.
__device__ __forceinline__ void mbar_init(uint64_t* b, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(b))), "r"(count));
}
__device__ __forceinline__ void mbar_arrive(uint64_t* b) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(b)))
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* b, unsigned parity) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(b));
  asm volatile(
      "{\n .reg .pred p;\n"
      "W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra W;\n}\n" ::"r"(a),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes, uint64_t* full) {
  const unsigned b = static_cast<unsigned>(__cvta_generic_to_shared(full));
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(b), "r"(bytes) : "memory");
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   static_cast<unsigned>(__cvta_generic_to_shared(dst))),
               "l"(src), "r"(bytes), "r"(b)
               : "memory");
}
template <int R>
__global__ void bulk_read_kernel(const uint8_t* base, int64_t per_cta, int stage, unsigned* sink) {
  extern __shared__ __align__(128) uint8_t ring[];
  __shared__ uint64_t full[R], empty[R];
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int W = static_cast<int>(blockDim.x / 32);
  const uint8_t* src = base + blockIdx.x * per_cta;
  const int64_t stages = per_cta / stage;
  if (threadIdx.x == 0) {
    for (int r = 0; r < R; ++r) mbar_init(&full[r], 1), mbar_init(&empty[r], static_cast<unsigned>(W));
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int r = 0; r < R && r < stages; ++r) bulk_load(ring + r * stage, src + r * static_cast<int64_t>(stage), stage, &full[r]);
  uint32_t acc = 0;
  const int per_warp = stage / W;  // bytes of a stage one warp reads
  for (int64_t i = 0; i < stages; ++i) {
    const int r = static_cast<int>(i % R);
    const unsigned parity = static_cast<unsigned>((i / R) & 1);
    mbar_wait(&full[r], parity);
    const uint8_t* st = ring + r * stage + warp * per_warp;
    for (int o = lane * 16; o < per_warp; o += 512) {
      const uint4 v = *reinterpret_cast<const uint4*>(st + o);
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[r]);
    if (threadIdx.x == 0 && i + R < stages) {
      mbar_wait(&empty[r], parity);
      bulk_load(ring + r * stage, src + (i + R) * stage, stage, &full[r]);
    }
  }
  if (acc == 0x12345678u) sink[blockIdx.x] = acc;  // practically never taken
}

using Launch = void (*)(const uint4*, int64_t, int, unsigned*, int, int);
template <int D>
void launch(const uint4* base, int64_t per_stream, int streams, unsigned* sink, int blocks, int threads) {
  stream_read_kernel<D><<<blocks, threads>>>(base, per_stream, streams, sink);
}
using GroupLaunch = void (*)(const uint4*, int64_t, unsigned*, int, int);
template <int D>
void launch_group(const uint4* base, int64_t per_cta, unsigned* sink, int ctas, int threads) {
  group_read_kernel<D><<<ctas, threads>>>(base, per_cta, sink);
}
GroupLaunch group_for(int64_t d) {
  switch (d) {
    case 1: return launch_group<1>;
    case 2: return launch_group<2>;
    case 4: return launch_group<4>;
    case 8: return launch_group<8>;
    default: return nullptr;
  }
}
using BulkLaunch = void (*)(const uint8_t*, int64_t, int, unsigned*, int, int);
constexpr int kBulkMaxRing = 200 << 10;  // shared-memory bytes a bulk ring may take
template <int R>
void launch_bulk(const uint8_t* base, int64_t per_cta, int stage, unsigned* sink, int ctas, int threads) {
  static const bool raised = [] {  // once per instantiation, outside the timed calls
    check_cuda(cudaFuncSetAttribute(bulk_read_kernel<R>, cudaFuncAttributeMaxDynamicSharedMemorySize, kBulkMaxRing),
               "bulk ring shared-memory limit");
    return true;
  }();
  (void)raised;
  bulk_read_kernel<R><<<ctas, threads, static_cast<size_t>(R) * stage>>>(base, per_cta, stage, sink);
}
BulkLaunch bulk_for(int64_t r) {
  switch (r) {
    case 2: return launch_bulk<2>;
    case 3: return launch_bulk<3>;
    case 4: return launch_bulk<4>;
    case 6: return launch_bulk<6>;
    default: return nullptr;
  }
}

Launch launch_for(int64_t d) {
  switch (d) {
    case 1: return launch<1>;
    case 2: return launch<2>;
    case 4: return launch<4>;
    case 8: return launch<8>;
    default: return nullptr;
  }
}

int run(int argc, char** argv) {
  using namespace fp4moe::bench;
  const char* prog = "bench_streams";
  int64_t mb = 88, wpc = 8;
  std::vector<int64_t> streams = {132, 264, 528, 1056, 1792, 2112, 4224}, depths = {1, 2, 4, 8};
  std::vector<int64_t> ctas = {132, 224, 264}, cta_warps = {8, 16}, stage_ktiles = {1, 2, 4}, rings = {2, 4, 6};
  const char* usage =
      "usage: bench_streams [--mb N] [--streams S,...] [--depth 1|2|4|8,...] [--warps-per-cta W] [--ctas C,...]\n"
      "                     [--cta-warps W,...] [--stage-ktiles K,...] [--stages 2|3|4|6,...]\n";
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--help" || f == "-h") {
      std::printf("%s", usage);
      return 0;
    }
    const bool known = f == "--mb" || f == "--streams" || f == "--depth" || f == "--warps-per-cta" || f == "--ctas" ||
                       f == "--cta-warps" || f == "--stage-ktiles" || f == "--stages";
    if (!known || i + 1 >= argc) {
      std::fprintf(stderr, "%s", usage);
      return 2;
    }
    const std::string v = argv[++i];
    if (f == "--mb") mb = flag_int(prog, f, v, 1, 4096);
    else if (f == "--streams") streams = flag_int_list(prog, f, v, 1, 1 << 20);
    else if (f == "--depth") depths = flag_int_list(prog, f, v, 1, 8);
    else if (f == "--ctas") ctas = flag_int_list(prog, f, v, 1, 1 << 16);
    else if (f == "--cta-warps") cta_warps = flag_int_list(prog, f, v, 1, 32);
    else if (f == "--stage-ktiles") stage_ktiles = flag_int_list(prog, f, v, 1, 16);
    else if (f == "--stages") rings = flag_int_list(prog, f, v, 2, 6);
    else wpc = flag_int(prog, f, v, 1, 32);
  }
  for (int64_t d : depths)
    if (!launch_for(d)) flag_error(prog, "--depth", std::to_string(d), "1, 2, 4 or 8");
  for (int64_t r : rings)
    if (!bulk_for(r)) flag_error(prog, "--stages", std::to_string(r), "2, 3, 4 or 6");
  const cudaDeviceProp prop = hopper_device();
  const int64_t bytes = mb << 20, span = 4 * bytes;
  DeviceBuffer buf(static_cast<size_t>(span), "read buffer"), sink(4u << 20, "sink");
  check_cuda(cudaMemset(buf.get(), 1, static_cast<size_t>(span)), "memset");
  const uint4* base = buf.get<uint4>();
  auto at = [&](int i) { return base + (static_cast<int64_t>(i) % 4) * (bytes / 16); };

  auto fn_sweep = [&](int i) { read_roof_kernel<<<prop.multiProcessorCount * 8, 512>>>(at(i), bytes / 16, sink.get<unsigned>()); };
  const double sweep_us = time_us(fn_sweep, iters_for(fn_sweep, 3000.0, 100.0));
  std::printf("# GPU: %s (%d SMs); %lld MB per call; sweep %.1f us = %.2f TB/s\n", prop.name, prop.multiProcessorCount,
              static_cast<long long>(mb), sweep_us, bytes / (sweep_us * 1e-6) / 1e12);
  std::printf("| streams | warps per SM | depth | KB in flight per warp | us | TB/s | / sweep time |\n|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int64_t s : streams) {
    const int64_t per_stream = bytes / 16 / s / kReqWords * kReqWords;  // whole requests
    if (per_stream == 0) continue;
    const int threads = static_cast<int>(32 * wpc);
    const int blocks = static_cast<int>((s + wpc - 1) / wpc);
    for (int64_t d : depths) {
      const Launch l = launch_for(d);
      auto fn = [&](int i) { l(at(i), per_stream, static_cast<int>(s), sink.get<unsigned>(), blocks, threads); };
      const double us = time_us(fn, iters_for(fn, 3000.0, 100.0));
      const double read = static_cast<double>(per_stream) * 16 * s;
      std::printf("| %lld | %.1f | %lld | %.1f | %.1f | %.2f | %.2fx |\n", static_cast<long long>(s),
                  static_cast<double>(s) / prop.multiProcessorCount, static_cast<long long>(d), d * 0.5, us,
                  read / (us * 1e-6) / 1e12, us / (sweep_us * read / bytes));
    }
  }
  check_cuda(cudaGetLastError(), "stream reads");

  // The CTA-contiguous patterns: each CTA one contiguous region, its warps side by side.
  std::printf("\n| pattern | CTAs | warps per CTA | depth / stages | stage KB | us | TB/s | / sweep time |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int64_t c : ctas)
    for (int64_t w : cta_warps) {
      const int threads = static_cast<int>(32 * w);
      for (int64_t d : {2, 4}) {
        const int64_t per_cta = bytes / 16 / c / (w * kReqWords) * (w * kReqWords);
        if (per_cta == 0) continue;  // fewer bytes than one piece per warp
        const GroupLaunch l = group_for(d);
        auto fn = [&](int i) { l(at(i), per_cta, sink.get<unsigned>(), static_cast<int>(c), threads); };
        const double us = time_us(fn, iters_for(fn, 3000.0, 100.0));
        const double read = static_cast<double>(per_cta) * 16 * c;
        std::printf("| group | %lld | %lld | %lld | %.1f | %.1f | %.2f | %.2fx |\n", static_cast<long long>(c),
                    static_cast<long long>(w), static_cast<long long>(d), w * 0.5, us, read / (us * 1e-6) / 1e12,
                    us / (sweep_us * read / bytes));
      }
      for (int64_t kt : stage_ktiles)
        for (int64_t r : rings) {
          const int stage = static_cast<int>(kt * w * 512);
          if (r * stage > kBulkMaxRing) continue;
          const BulkLaunch l = bulk_for(r);
          const int64_t per_cta = bytes / c / stage * stage;
          if (per_cta == 0) continue;  // fewer bytes than one stage per CTA
          const uint8_t* b8 = reinterpret_cast<const uint8_t*>(base);
          auto fn = [&](int i) {
            l(b8 + (static_cast<int64_t>(i) % 4) * bytes, per_cta, stage, sink.get<unsigned>(), static_cast<int>(c), threads);
          };
          const double us = time_us(fn, iters_for(fn, 3000.0, 100.0));
          const double read = static_cast<double>(per_cta) * c;
          std::printf("| bulk | %lld | %lld | %lld | %.1f | %.1f | %.2f | %.2fx |\n", static_cast<long long>(c),
                      static_cast<long long>(w), static_cast<long long>(r), stage / 1024.0, us, read / (us * 1e-6) / 1e12,
                      us / (sweep_us * read / bytes));
        }
    }
  check_cuda(cudaGetLastError(), "CTA reads");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_streams: error: %s\n", e.what());
    return 1;
  }
}
