// Benchmark of the CUDA MoE layer (ops/cuda/moe.h) on DeepSeek-V4-Flash (256 experts,
// hidden 4096, expert intermediate 2048, top-6, 1 shared) and V4-Pro (384, 7168, 3072,
// top-6, 1 shared) layers, NVFP4 experts, following DESIGN.md's protocol:
//   - fp4moe: the whole layer call (routing from logits, dispatch, grouped gate|up+SwiGLU,
//     grouped down, shared expert, combine);
//   - cuBLAS BF16 grouped: the same routing and dispatch kernels, a gather of the token rows,
//     cublasGemmGroupedBatchedEx over the dequantized (bf16) experts for gate|up, a SwiGLU
//     kernel, cublasGemmGroupedBatchedEx for down, the same combine. Its group sizes come
//     from the host (that API needs them there), computed before timing: this favours it;
//   - the FP4 weight-read floor: the FP4 code + scale bytes of the experts actually touched
//     (plus the shared expert) divided by the bandwidth of a plain streaming-read kernel
//     over 1 GiB, measured in the same run;
//   - a plain read of the touched bytes: the same streaming-read kernel over exactly the
//     floor's bytes (up to 512 MB; the offset moves every call, so nothing is read from L2):
//     what the hardware gives for reads of that size alone, with no routing or arithmetic.
// Routing is realistic random: normal logits, V4 scored router, no bias; 8 different logit
// sets are rotated so that consecutive calls touch different experts (weights are not found
// in L2). CUDA events around back-to-back calls after a warm-up, median of 7.
// Memory: for V4-Pro the bf16 experts would take 51 GB; the baseline keeps at most 24 GB of
// distinct bf16 experts and expert e uses copy e mod n (a 132 MB expert never stays in L2).
// Output: a markdown table on stdout, one JSON object per row (--json FILE); token tiles 0: the
// call ran the single-token kernel (moe_single_token.cu), no tiles.
// Usage: bench_moe [--json FILE] [--t LIST] [--models flash,pro] [--no-baseline] [--grouped]
//                  [--mtiles N] [--stream-tokens N] [--stream-warps N] [--down-strips N] [--gate-up-ring N]
//                  [--no-stream16] [--sustain MS]
// (--no-baseline: fp4moe alone, eager and graph, e.g. under a profiler; --grouped: one-token
// calls on the grouped path instead of the single-token kernel, for comparison; --mtiles: pin
// the routed experts' token tiles, 1, 2, 4, 8, 12 or 16 eighths, for comparison; --stream-tokens,
// --stream-warps: pin the weight-streaming kernel's tokens per tile and warps per CTA, 1..8;
// --down-strips, --gate-up-ring: pin its weight strips per down item and gate|up's register
// ring (chunks) at 8-token tiles, 1 or 2;
// --no-stream16: 16-token tiles on the grouped kernel even where the streaming kernel fits;
// --sustain MS: every measurement, the 1 GiB read's included, first runs its calls back to back
// for about MS milliseconds and then times windows of about MS / 10 ms, so that the GPU is at
// its power limit, as in a serving loop; by default a window is ~3 ms after three warm-up calls,
// which an H200 runs near its boost clock: notes/gpu-notes.md step 41)
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench_common.cuh"
#include "ops/cpu/moe_ref.h"
#include "ops/cuda/moe.h"
#include "ops/cuda/w4a16_kernels.h"

using namespace fp4moe;
using namespace fp4moe::cuda;
using namespace fp4moe::bench;

namespace {

struct Model {
  const char* name;
  int experts;
  int64_t hidden, inter;
};
const Model kModels[] = {{"V4-Flash", 256, 4096, 2048}, {"V4-Pro", 384, 7168, 3072}};
constexpr int kTopK = 6;
constexpr int kSets = 8;

// Random codes; scale bytes in [lo, lo + span) (the repacked e5m3 bytes: scales 2^-2..2^2).
__global__ void fill_bytes(uint8_t* p, int64_t n, uint64_t seed, int lo, int span) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t z = mix64((i + 1) * 0x9E3779B97F4A7C15ull ^ seed);
    p[i] = span ? static_cast<uint8_t>(lo + z % span) : static_cast<uint8_t>(z);
  }
}
// Baseline helpers: gather token rows into segment order; clamped SwiGLU on [P, 2I].
__global__ void gather_rows(const __nv_bfloat16* x, const int32_t* sorted_tok, const int32_t* total, int64_t H,
                            __nv_bfloat16* xs) {
  const int64_t vec = H / 8, n = static_cast<int64_t>(*total) * vec;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < n;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = v / vec, c = (v % vec) * 8;
    *reinterpret_cast<uint4*>(xs + r * H + c) = *reinterpret_cast<const uint4*>(x + sorted_tok[r] * H + c);
  }
}
__global__ void swiglu_rows(const __nv_bfloat16* gu, const int32_t* total, int64_t I, float L, __nv_bfloat16* h) {
  const int64_t n = static_cast<int64_t>(*total) * I;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < n;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = v / I, i = v % I;
    const float g = fminf(__bfloat162float(gu[r * 2 * I + i]), L);
    const float u = fminf(fmaxf(__bfloat162float(gu[r * 2 * I + I + i]), -L), L);
    const float s = __bfloat162float(__float2bfloat16_rn(g / (1.0f + expf(-g))));
    h[v] = __float2bfloat16_rn(s * u);
  }
}

struct Row {
  std::string model;
  int64_t T;
  double fp4_us, graph_us, cublas_us, floor_us, touched, rel_l2;
  double plain_us;  // plain read of floor_bytes (0: not measured, floor_bytes > 512 MB)
  int64_t floor_bytes;
  int mtiles;
};

}  // namespace

constexpr const char* kProg = "bench_moe";

int run_bench(int argc, char** argv) {
  std::string json_path;
  std::vector<int64_t> ts = {1, 8, 32, 64, 128, 512, 4096};
  std::string models = "flash,pro";
  bool baseline = true;
  double sustain_ms = 0;
  MoeOptions opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-baseline") baseline = false;
    else if (a == "--grouped") opt.single_token = false;
    else if (a == "--no-stream16") opt.stream16 = false;
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--mtiles" && i + 1 < argc) opt.mtiles = static_cast<int>(flag_int(kProg, a, argv[++i], 1, 16));
    else if (a == "--stream-tokens" && i + 1 < argc) opt.stream_tokens = static_cast<int>(flag_int(kProg, a, argv[++i], 1, 8));
    else if (a == "--stream-warps" && i + 1 < argc) opt.stream_warps = static_cast<int>(flag_int(kProg, a, argv[++i], 1, 8));
    else if (a == "--down-strips" && i + 1 < argc) opt.down_strips = static_cast<int>(flag_int(kProg, a, argv[++i], 1, 2));
    else if (a == "--gate-up-ring" && i + 1 < argc) opt.gate_up_ring = static_cast<int>(flag_int(kProg, a, argv[++i], 1, 2));
    else if (a == "--models" && i + 1 < argc) models = argv[++i];
    else if (a == "--sustain" && i + 1 < argc) sustain_ms = flag_double(kProg, a, argv[++i], 0, 60000);
    else if (a == "--t" && i + 1 < argc) ts = flag_int_list(kProg, a, argv[++i], 1, int64_t{1} << 20);
    else {
      std::fprintf(stderr, "usage: bench_moe [--json FILE] [--t 1,8,64] [--models flash,pro] [--no-baseline] [--grouped] [--mtiles N]\n"
                   "                 [--stream-tokens N] [--stream-warps N] [--down-strips N] [--gate-up-ring N] [--no-stream16] [--sustain MS]\n");
      return 2;
    }
  }
  if (opt.mtiles && *opt.mtiles != 1 && *opt.mtiles != 2 && *opt.mtiles != 4 && *opt.mtiles != 8 && *opt.mtiles != 12 &&
      *opt.mtiles != 16)
    flag_error(kProg, "--mtiles", std::to_string(*opt.mtiles), "1, 2, 4, 8, 12 or 16");
  for (const std::string& m : split_commas(models))
    if (m != "flash" && m != "pro") flag_error(kProg, "--models", models, "a comma-separated list of flash and pro");
  // One measurement: windows of ~3 ms (at most 100 calls) by default; with --sustain, the calls
  // first run back to back for ~sustain_ms (no synchronization before the timed windows).
  auto timed = [&](const std::function<void(int)>& fn, double plain_budget_us, double plain_max) {
    if (sustain_ms <= 0) return time_us(fn, iters_for(fn, plain_budget_us, plain_max));
    const double one = std::max(time_us(fn, 1, 3), 1.0);
    const int warm = static_cast<int>(std::clamp(sustain_ms * 1000.0 / one, 1.0, 1e7));
    for (int i = 0; i < warm; ++i) fn(i);
    return time_us(fn, static_cast<int>(std::clamp(sustain_ms * 100.0 / one, 2.0, 1e7)));
  };
  const cudaDeviceProp prop = hopper_device();
  cublasHandle_t hb;
  CUBLAS_OK(cublasCreate(&hb));
  DeviceBuffer sink(1 << 16);
  const int roof_blocks = prop.multiProcessorCount * 8;
  double read_tbps = 0;
  const int64_t read_buf_bytes = 1ll << 30;
  DeviceBuffer read_buf(read_buf_bytes);  // also for the plain reads of each row's bytes
  {
    cudaMemset(read_buf.get(), 1, read_buf_bytes);
    auto fn = [&](int) { read_roof_kernel<<<roof_blocks, 512>>>(read_buf.get<uint4>(), read_buf_bytes / 16, sink.get<unsigned>()); };
    read_tbps = read_buf_bytes / ((sustain_ms > 0 ? timed(fn, 0.0, 0.0) : time_us(fn, 10)) * 1e-6) / 1e12;
  }
  // A plain read of `bytes` (<= 512 MB): call i reads at its own offset, so no call finds
  // the previous one's bytes in L2.
  auto plain_read_us = [&](int64_t bytes) -> double {
    const int64_t n = bytes / 256 * 256;
    if (n <= 0 || n > read_buf_bytes / 2) return 0.0;
    const int64_t step = (n / (1 << 20) + 2) << 20, span = read_buf_bytes - n;
    auto fn = [&](int i) {
      const int64_t off = (static_cast<int64_t>(i) * step) % span / 256 * 256;
      read_roof_kernel<<<roof_blocks, 512>>>(read_buf.get<uint4>() + off / 16, n / 16, sink.get<unsigned>());
    };
    return timed(fn, 3000.0, 100.0);
  };
  std::printf("# GPU: %s (%d SMs), 1 GiB streaming read %.2f TB/s%s\n", prop.name, prop.multiProcessorCount, read_tbps,
              sustain_ms > 0 ? (", sustained: " + std::to_string(static_cast<int>(sustain_ms)) + " ms back to back before each measurement").c_str() : "");
  const int64_t tmax = *std::max_element(ts.begin(), ts.end());

  std::vector<Row> rows;
  for (const Model& M : kModels) {
    if (models.find(std::string(M.name) == "V4-Flash" ? "flash" : "pro") == std::string::npos) continue;
    MoeSpec spec;
    spec.router.kind = cpu::RouterKind::kV4Scored;
    spec.router.n_experts = M.experts;
    spec.router.top_k = kTopK;
    spec.router.routed_scaling_factor = 1.5f;
    spec.format = MatrixFormat::kNVFP4;
    spec.hidden = M.hidden;
    spec.inter = M.inter;
    spec.n_local = M.experts;
    spec.has_shared = true;
    MoeLayer L = MoeLayer::create(spec);
    fill_bytes<<<4096, 256>>>(L.gu_codes.get<uint8_t>(), L.gu_code_stride * L.slots, 1, 0, 0);
    fill_bytes<<<4096, 256>>>(L.dn_codes.get<uint8_t>(), L.dn_code_stride * L.slots, 2, 0, 0);
    fill_bytes<<<4096, 256>>>(L.gu_scales.get<uint8_t>(), L.gu_scale_stride * L.slots, 3, 64, 40);
    fill_bytes<<<4096, 256>>>(L.dn_scales.get<uint8_t>(), L.dn_scale_stride * L.slots, 4, 64, 40);
    std::vector<float> gs(static_cast<size_t>(2 * L.slots), 1.0f / 64);
    L.gu_gscale.upload(gs.data(), gs.size() * 4);
    L.dn_gscale.upload(gs.data(), static_cast<size_t>(L.slots) * 4);
    // bf16 experts for the baseline (dequantized through the kernels' own path).
    const int64_t gu_bf16 = 2 * M.inter * M.hidden * 2, dn_bf16 = M.hidden * M.inter * 2;
    const int ncopies = baseline ? static_cast<int>(std::min<int64_t>(L.slots, (24ll << 30) / (gu_bf16 + dn_bf16))) : 1;
    DeviceBuffer wgu(static_cast<size_t>(gu_bf16 * ncopies)), wdn(static_cast<size_t>(dn_bf16 * ncopies));
    for (int c = 0; c < ncopies; ++c) {
      W4Args a;
      a.nvfp4 = true;
      a.codes = L.gu_codes.get<uint8_t>() + c * L.gu_code_stride;
      a.scales = L.gu_scales.get<uint8_t>() + c * L.gu_scale_stride;
      a.ktiles = L.gu_ktiles;
      a.n = 2 * M.inter;
      a.k = M.hidden;
      check_cuda(launch_w4_dequantize(a, wgu.get<uint8_t>() + c * gu_bf16, false, false, nullptr), "dequantize");
      a.codes = L.dn_codes.get<uint8_t>() + c * L.dn_code_stride;
      a.scales = L.dn_scales.get<uint8_t>() + c * L.dn_scale_stride;
      a.ktiles = L.dn_ktiles;
      a.n = M.hidden;
      a.k = M.inter;
      check_cuda(launch_w4_dequantize(a, wdn.get<uint8_t>() + c * dn_bf16, false, false, nullptr), "dequantize");
    }
    // The dequantized experts hold code * scale; the baseline applies the global scale as alpha.
    const float alpha = 1.0f / 64;
    check_cuda(cudaDeviceSynchronize(), "setup");

    MoeWorkspace ws = MoeWorkspace::create(L, tmax);
    DeviceBuffer x(tmax * M.hidden * 2), out(tmax * M.hidden * 2), out_b(tmax * M.hidden * 2);
    fill_bf16_kernel<<<1024, 256>>>(x.get<__nv_bfloat16>(), tmax * M.hidden, 7);
    const int64_t P = tmax * (kTopK + 1);
    DeviceBuffer xs(P * M.hidden * 2), gu_out(P * 2 * M.inter * 2), hb_buf(P * M.inter * 2);
    std::mt19937_64 rng(42);
    for (int64_t T : ts) {
      // kSets routings: logits on the device, counts and touched experts from the CPU router.
      std::vector<DeviceBuffer> logits;
      std::vector<std::vector<int>> counts(kSets);
      double touched = 0;
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (int s = 0; s < kSets; ++s) {
        std::vector<float> l(static_cast<size_t>(T * M.experts));
        for (auto& v : l) v = nd(rng);
        std::vector<int32_t> ids(static_cast<size_t>(T * kTopK));
        std::vector<float> w(ids.size());
        cpu::moe_route(spec.router, l.data(), T, nullptr, nullptr, nullptr, ids.data(), w.data());
        counts[static_cast<size_t>(s)].assign(static_cast<size_t>(L.slots), 0);
        for (int32_t id : ids) counts[static_cast<size_t>(s)][static_cast<size_t>(id)]++;
        counts[static_cast<size_t>(s)][static_cast<size_t>(M.experts)] = static_cast<int>(T);
        std::set<int32_t> u(ids.begin(), ids.end());
        touched += static_cast<double>(u.size() + 1) / kSets;
        logits.emplace_back(l.size() * 4);
        logits.back().upload(l.data(), l.size() * 4);
      }
      const int64_t floor_bytes = static_cast<int64_t>(touched * L.slot_stream_bytes());
      const double floor_us = floor_bytes / (read_tbps * 1e12) * 1e6;
      const double plain_us = plain_read_us(floor_bytes);
      auto fp4_fn = [&](int i) {
        moe_forward(L, x.get<__nv_bfloat16>(), T, logits[static_cast<size_t>(i % kSets)].get<float>(), nullptr, nullptr,
                    out.get<__nv_bfloat16>(), ws, nullptr, opt);
      };
      const double fp4_us = timed(fp4_fn, 3000.0, 100.0);
      // The same calls replayed from CUDA graphs (one per routing set): launch overhead off.
      std::vector<cudaGraphExec_t> execs(kSets);
      {
        cudaStream_t cs;
        check_cuda(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking), "capture stream");
        for (int si = 0; si < kSets; ++si) {
          cudaGraph_t g;
          check_cuda(cudaStreamBeginCapture(cs, cudaStreamCaptureModeGlobal), "capture");
          moe_forward(L, x.get<__nv_bfloat16>(), T, logits[static_cast<size_t>(si)].get<float>(), nullptr, nullptr,
                      out.get<__nv_bfloat16>(), ws, cs, opt);
          check_cuda(cudaStreamEndCapture(cs, &g), "capture");
          check_cuda(cudaGraphInstantiate(&execs[static_cast<size_t>(si)], g, 0), "instantiate");
          cudaGraphDestroy(g);
        }
        cudaStreamDestroy(cs);
      }
      auto graph_fn = [&](int i) { check_cuda(cudaGraphLaunch(execs[static_cast<size_t>(i % kSets)], nullptr), "graph launch"); };
      const double graph_us = timed(graph_fn, 3000.0, 100.0);
      for (cudaGraphExec_t e : execs) cudaGraphExecDestroy(e);
      if (!baseline) {
        const int mt1 = moe_token_tiles(L, T, opt);
        rows.push_back(Row{M.name, T, fp4_us, graph_us, 0.0, floor_us, touched, -1.0, plain_us, floor_bytes, mt1});
        std::fprintf(stderr, "%s T=%lld: fp4moe %.1f us (graph %.1f us), floor %.1f us\n", M.name, static_cast<long long>(T), fp4_us,
                     graph_us, floor_us);
        continue;
      }
      // Baseline pointer tables per routing set (host group sizes, device pointer arrays).
      struct Groups {
        std::vector<int> m_gu, m_dn, n, k_gu, k_dn, lda_gu, lda_dn, ldc_gu, ldc_dn;
        DeviceBuffer A_gu, B_gu, C_gu, A_dn, B_dn, C_dn;
        int count = 0;
      };
      std::vector<Groups> groups(kSets);
      for (int s = 0; s < kSets; ++s) {
        Groups& g = groups[static_cast<size_t>(s)];
        std::vector<const void*> agu, bgu, adn, bdn;
        std::vector<void*> cgu, cdn;
        int64_t off = 0;
        for (int e = 0; e < L.slots; ++e) {
          const int c = counts[static_cast<size_t>(s)][static_cast<size_t>(e)];
          if (c == 0) continue;
          const int copy = e % ncopies;
          g.m_gu.push_back(static_cast<int>(2 * M.inter));
          g.m_dn.push_back(static_cast<int>(M.hidden));
          g.n.push_back(c);
          g.k_gu.push_back(static_cast<int>(M.hidden));
          g.k_dn.push_back(static_cast<int>(M.inter));
          agu.push_back(wgu.get<uint8_t>() + copy * gu_bf16);
          bgu.push_back(xs.get<__nv_bfloat16>() + off * M.hidden);
          cgu.push_back(gu_out.get<__nv_bfloat16>() + off * 2 * M.inter);
          adn.push_back(wdn.get<uint8_t>() + copy * dn_bf16);
          bdn.push_back(hb_buf.get<__nv_bfloat16>() + off * M.inter);
          cdn.push_back(ws.y.get<__nv_bfloat16>() + off * M.hidden);
          off += c;
        }
        g.count = static_cast<int>(g.n.size());
        auto up = [](DeviceBuffer& d, const auto& v) {
          d = DeviceBuffer(v.size() * sizeof(void*));
          d.upload(v.data(), v.size() * sizeof(void*));
        };
        up(g.A_gu, agu), up(g.B_gu, bgu), up(g.C_gu, cgu), up(g.A_dn, adn), up(g.B_dn, bdn), up(g.C_dn, cdn);
      }
      check_cuda(cudaDeviceSynchronize(), "baseline tables");
      const std::vector<cublasOperation_t> opT(static_cast<size_t>(L.slots), CUBLAS_OP_T), opN(static_cast<size_t>(L.slots), CUBLAS_OP_N);
      const std::vector<float> alphas(static_cast<size_t>(L.slots), alpha), betas(static_cast<size_t>(L.slots), 0.0f);
      const std::vector<int> ones(static_cast<size_t>(L.slots), 1);
      auto base_fn = [&](int i) {
        const int s = i % kSets;
        const Groups& g = groups[static_cast<size_t>(s)];
        moe_route(L, logits[static_cast<size_t>(s)].get<float>(), T, nullptr, nullptr, ws, nullptr);
        moe_dispatch(L, T, nullptr, ws, nullptr);
        const int32_t* total = ws.seg_off.get<int32_t>() + L.slots;
        gather_rows<<<1024, 256>>>(x.get<__nv_bfloat16>(), ws.sorted_tok.get<int32_t>(), total, M.hidden, xs.get<__nv_bfloat16>());
        CUBLAS_OK(cublasGemmGroupedBatchedEx(hb, opT.data(), opN.data(), g.m_gu.data(), g.n.data(), g.k_gu.data(), alphas.data(),
                                             g.A_gu.get<const void*>(), CUDA_R_16BF, g.k_gu.data(), g.B_gu.get<const void*>(),
                                             CUDA_R_16BF, g.k_gu.data(), betas.data(), g.C_gu.get<void*>(), CUDA_R_16BF,
                                             g.m_gu.data(), g.count, ones.data(), CUBLAS_COMPUTE_32F));
        swiglu_rows<<<1024, 256>>>(gu_out.get<__nv_bfloat16>(), total, M.inter, 10.0f, hb_buf.get<__nv_bfloat16>());
        CUBLAS_OK(cublasGemmGroupedBatchedEx(hb, opT.data(), opN.data(), g.m_dn.data(), g.n.data(), g.k_dn.data(), alphas.data(),
                                             g.A_dn.get<const void*>(), CUDA_R_16BF, g.k_dn.data(), g.B_dn.get<const void*>(),
                                             CUDA_R_16BF, g.k_dn.data(), betas.data(), g.C_dn.get<void*>(), CUDA_R_16BF,
                                             g.m_dn.data(), g.count, ones.data(), CUBLAS_COMPUTE_32F));
        MoeCombineArgs c;
        c.y = ws.y.get<__nv_bfloat16>();
        c.pair_pos = ws.pair_pos.get<int32_t>();
        c.weights = ws.weights.get<float>();
        c.k = kTopK;
        c.kp = kTopK + 1;
        c.has_shared = true;
        c.T = T;
        c.H = M.hidden;
        c.out = out_b.get<__nv_bfloat16>();
        check_cuda(launch_moe_combine(c, nullptr), "baseline combine");
      };
      const double cub_us = timed(base_fn, 3000.0, 100.0);
      // Agreement of the two on routing set 0 (same routing, same rounding points).
      fp4_fn(0);
      check_cuda(cudaMemset(ws.y.get(), 0xFF, ws.y.bytes()), "poison");  // the baseline must write its own rows
      base_fn(0);
      check_cuda(cudaDeviceSynchronize(), "compare");
      std::vector<uint16_t> a(static_cast<size_t>(T * M.hidden)), b(a.size());
      out.download(a.data(), a.size() * 2);
      out_b.download(b.data(), b.size() * 2);
      double num = 0, den = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        const double u = bf16_to_float(a[i]), v = bf16_to_float(b[i]);
        num += (u - v) * (u - v);
        den += v * v;
      }
      const int mt = moe_token_tiles(L, T, opt);
      // With aliased bf16 copies the baseline computes other experts' products: no comparison.
      const double rl2 = ncopies < L.slots ? -1.0 : std::sqrt(num / std::max(den, 1e-30));
      rows.push_back(Row{M.name, T, fp4_us, graph_us, cub_us, floor_us, touched, rl2, plain_us, floor_bytes, mt});
      std::fprintf(stderr, "%s T=%lld: fp4moe %.1f us (graph %.1f us), cuBLAS grouped %.1f us, floor %.1f us (%.1f experts), rel_l2 %.2e\n",
                   M.name, static_cast<long long>(T), fp4_us, graph_us, cub_us, floor_us, touched, rows.back().rel_l2);
    }
  }
  std::printf("\n| model | T | fp4moe us | fp4moe graph us | cuBLAS bf16 grouped us | speedup | FP4 floor us | fp4moe / floor | graph / floor | plain read of the floor's bytes us | plain read / floor | experts touched | FP4 TB/s (graph) | rel L2 vs baseline | token tiles |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows)
    std::printf("| %s | %lld | %.1f | %.1f | %.1f | %.2fx | %.1f | %.2fx | %.2fx | %.1f | %.2fx | %.1f | %.2f | %.1e | %d |\n", r.model.c_str(),
                static_cast<long long>(r.T), r.fp4_us, r.graph_us, r.cublas_us, r.cublas_us / r.fp4_us, r.floor_us,
                r.fp4_us / r.floor_us, r.graph_us / r.floor_us, r.plain_us, r.plain_us / r.floor_us, r.touched,
                r.floor_bytes / (r.graph_us * 1e-6) / 1e12, r.rel_l2, r.mtiles);
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (!f) return 1;
    std::fprintf(f, "{\"gpu\": \"%s\", \"sms\": %d, \"read_1gib_tbps\": %.3f, \"sustain_ms\": %.0f,\n \"rows\": [\n",
                 prop.name, prop.multiProcessorCount, read_tbps, sustain_ms);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f,
                   "  {\"model\": \"%s\", \"op\": \"moe layer\", \"T\": %lld, \"fp4moe_us\": %.3f, \"fp4moe_graph_us\": %.3f, \"cublas_grouped_bf16_us\": %.3f, "
                   "\"floor_us\": %.3f, \"floor_bytes\": %lld, \"experts_touched\": %.2f, \"speedup_vs_cublas\": %.3f, "
                   "\"floor_ratio\": %.3f, \"plain_read_us\": %.3f, \"rel_l2_vs_baseline\": %.3e, \"mtiles\": %d}%s\n",
                   r.model.c_str(), static_cast<long long>(r.T), r.fp4_us, r.graph_us, r.cublas_us, r.floor_us,
                   static_cast<long long>(r.floor_bytes), r.touched, r.cublas_us / r.fp4_us, r.fp4_us / r.floor_us, r.plain_us,
                   r.rel_l2, r.mtiles, i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, " ]}\n");
    std::fclose(f);
  }
  cublasDestroy(hb);
  return 0;
}

// A CUDA or cuBLAS failure (no GPU, an old driver, out of memory) is one line and exit 1.
int main(int argc, char** argv) {
  try {
    return run_bench(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_moe: error: %s\n", e.what());
    return 1;
  }
}
