// The read-pattern benchmark behind the one-token MoE kernel's bound (notes/gpu-notes.md, "Where
// issue 5 stands after step 62"): the same bytes read
//   - as one sweep (read_roof_kernel, the floor's kernel: neighbouring threads read neighbouring
//     16-byte words, the grid strides over everything), and
//   - as S independent streams, one per warp, each a contiguous region read in 512-byte warp
//     requests (16 bytes per lane, evict-first) through a ring of D requests in flight (a slot is
//     refilled as soon as it is consumed), the way the one-token kernel's ~1800-2100 strip units
//     read their weights (one 512-byte code request per k-tile).
// If the streams fall below the sweep as S grows, at every D, the pattern bounds the T = 1 layer
// whatever its arithmetic. Each call reads at its own offset of a buffer 4x the bytes (no call
// finds the previous one's bytes in L2); median of 7 repeats (bench_common.cuh).
//
//   bench_streams [--mb 88] [--streams 132,264,528,1056,1792,2112,4224] [--depth 1,2,4,8]
//                 [--warps-per-cta 8]
//   88 MB: V4-Flash's one-token weight bytes (6 routed + 1 shared expert).
#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.cuh"

using fp4moe::cuda::check_cuda;
using fp4moe::cuda::DeviceBuffer;

namespace {

constexpr int kReqWords = 32;  // 16-byte words per 512-byte warp request

// Warp w reads words [w * per_stream, (w + 1) * per_stream) of base in requests of 32 words.
template <int D>
__global__ void stream_read_kernel(const uint4* base, int64_t per_stream, int streams, unsigned* sink) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (warp >= streams) return;
  const uint4* p = base + warp * per_stream + lane;
  const int64_t reqs = per_stream / kReqWords;
  uint4 r[D];
#pragma unroll
  for (int d = 0; d < D; ++d) r[d] = d < reqs ? __ldcs(p + d * kReqWords) : make_uint4(0, 0, 0, 0);
  uint32_t acc = 0;
  for (int64_t i = 0; i < reqs; i += D) {
#pragma unroll
    for (int d = 0; d < D; ++d) {
      if (i + d >= reqs) break;
      const uint4 v = r[d];
      if (i + D + d < reqs) r[d] = __ldcs(p + (i + D + d) * kReqWords);
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
  }
  if (acc == 0x12345678u) sink[warp] = acc;  // practically never taken
}

using Launch = void (*)(const uint4*, int64_t, int, unsigned*, int, int);
template <int D>
void launch(const uint4* base, int64_t per_stream, int streams, unsigned* sink, int blocks, int threads) {
  stream_read_kernel<D><<<blocks, threads>>>(base, per_stream, streams, sink);
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
  const char* usage = "usage: bench_streams [--mb N] [--streams S,...] [--depth 1|2|4|8,...] [--warps-per-cta W]\n";
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--help" || f == "-h") {
      std::printf("%s", usage);
      return 0;
    }
    const bool known = f == "--mb" || f == "--streams" || f == "--depth" || f == "--warps-per-cta";
    if (!known || i + 1 >= argc) {
      std::fprintf(stderr, "%s", usage);
      return 2;
    }
    const std::string v = argv[++i];
    if (f == "--mb") mb = flag_int(prog, f, v, 1, 4096);
    else if (f == "--streams") streams = flag_int_list(prog, f, v, 1, 1 << 20);
    else if (f == "--depth") depths = flag_int_list(prog, f, v, 1, 8);
    else wpc = flag_int(prog, f, v, 1, 32);
  }
  for (int64_t d : depths)
    if (!launch_for(d)) flag_error(prog, "--depth", std::to_string(d), "1, 2, 4 or 8");
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
