// Benchmark of the FP4 W4A16 linear (ops/cuda/linear.h) over the DeepSeek-V4-Flash and
// V4-Pro linear shapes, following the protocol of DESIGN.md:
//   - each row runs, in this process and timed the same way: fp4moe; cuBLAS BF16
//     (cublasGemmEx) on the dequantized weights; and the roof, a plain streaming-read kernel
//     over the same number of bytes as fp4moe reads for the weights (codes + scales);
//   - CUDA events around back-to-back launches after a warm-up; the weights (and the roof's
//     buffer, and cuBLAS's bf16 weights) are rotated over copies totalling >= 256 MB, so
//     no call finds its weights in the 50 MB L2; the median of 7 repeats;
//   - cuBLAS BF16 peak: an 8192^3 GEMM, measured once per run.
// Output: a markdown table on stdout and one JSON object per row (--json FILE).
// Usage: bench_linear [--json FILE] [--quick] [--m LIST] [--only 'MODEL OP']
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench_common.cuh"
#include "ops/cuda/linear.h"

using namespace fp4moe;
using namespace fp4moe::cuda;
using namespace fp4moe::bench;

namespace {

struct Shape {
  const char* model;
  const char* op;
  std::vector<int64_t> parts;  // output rows of each fused part
  int64_t k;
};

const std::vector<Shape> kShapes = {
    {"V4-Flash", "q_a|kv", {1024, 512}, 4096},
    {"V4-Flash", "q_b", {32768}, 1024},
    {"V4-Flash", "o_b", {4096}, 8192},
    {"V4-Flash", "expert gate|up", {2048, 2048}, 4096},
    {"V4-Flash", "expert down", {4096}, 2048},
    {"V4-Flash", "shared gate|up", {2048, 2048}, 4096},
    {"V4-Flash", "shared down", {4096}, 2048},
    {"V4-Pro", "q_a|kv", {1536, 512}, 7168},
    {"V4-Pro", "q_b", {65536}, 1536},
    {"V4-Pro", "o_b", {7168}, 16384},
    {"V4-Pro", "expert gate|up", {3072, 3072}, 7168},
    {"V4-Pro", "expert down", {7168}, 3072},
    {"V4-Pro", "shared gate|up", {3072, 3072}, 7168},
    {"V4-Pro", "shared down", {7168}, 3072},
};

struct Row {
  std::string model, op, config;
  int64_t n, k, m;
  double fp4_us, cublas_us, roof_us, mma_us, wgmma_us;
  int64_t weight_bytes, stream_bytes;
};

// Random FP4 weight with realistic scales (parts get different global scales), repacked.
W4Layout random_layout(std::mt19937_64& rng, const Shape& s) {
  Matrix m;
  m.format = MatrixFormat::kNVFP4;
  m.scale_kind = ScaleKind::kE4m3;
  m.cols = s.k;
  m.ranges.clear();
  float g = 1.0e-4f;
  for (int64_t p : s.parts) {
    m.ranges.push_back(OutputRange{m.rows, g});
    m.rows += p;
    g *= 3.0f;
  }
  m.data.resize(static_cast<size_t>(m.rows * m.cols / 2));
  for (size_t i = 0; i < m.data.size(); i += 8) {
    const uint64_t r = rng();
    std::memcpy(&m.data[i], &r, std::min<size_t>(8, m.data.size() - i));
  }
  m.scales.resize(static_cast<size_t>(m.rows * m.cols / 16));
  for (auto& b : m.scales) b = static_cast<uint8_t>(0x28 + rng() % 0x20);  // 2^-2 .. 2^2
  return repack_w4(m.view());
}

}  // namespace

int run_bench(int argc, char** argv) {
  std::string json_path;
  std::vector<int64_t> ms = {1, 4, 16, 64, 256, 1024, 4096, 16384};
  bool quick = false;
  std::string only;  // "model op" substring filter
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--quick") quick = true;
    else if (a == "--m" && i + 1 < argc) ms = flag_int_list("bench_linear", a, argv[++i], 1, int64_t{1} << 20);
    else {
      std::fprintf(stderr, "usage: bench_linear [--json FILE] [--quick] [--m 1,4,16] [--only 'V4-Pro o_b']\n");
      return 2;
    }
  }
  const cudaDeviceProp prop = hopper_device();
  cublasHandle_t h;
  CUBLAS_OK(cublasCreate(&h));
  const int64_t kRotateBytes = 256ll << 20;

  // cuBLAS BF16 peak.
  double peak_tflops = 0;
  {
    const int64_t S = 8192;
    DeviceBuffer A(S * S * 2), B(S * S * 2), C(S * S * 2);
    fill_bf16_kernel<<<1024, 256>>>(A.get<__nv_bfloat16>(), S * S, 1);
    fill_bf16_kernel<<<1024, 256>>>(B.get<__nv_bfloat16>(), S * S, 2);
    const float one = 1, zero = 0;
    auto fn = [&](int) {
      CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, S, S, S, &one, A.get(), CUDA_R_16BF, S, B.get(), CUDA_R_16BF, S,
                             &zero, C.get(), CUDA_R_16BF, S, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    };
    peak_tflops = 2.0 * S * S * S / (time_us(fn, 10) * 1e-6) / 1e12;
  }
  // Large-buffer read bandwidth (1 GiB), for reference.
  double big_read_tbps = 0;
  DeviceBuffer sink(1 << 16);
  const int roof_blocks = prop.multiProcessorCount * 8;
  {
    const int64_t bytes = 1ll << 30;
    DeviceBuffer buf(bytes);
    cudaMemset(buf.get(), 1, bytes);
    auto fn = [&](int) { read_roof_kernel<<<roof_blocks, 512>>>(buf.get<uint4>(), bytes / 16, sink.get<unsigned>()); };
    big_read_tbps = bytes / (time_us(fn, 10) * 1e-6) / 1e12;
  }
  std::printf("# GPU: %s (%d SMs), cuBLAS BF16 peak %.0f TFLOP/s (8192^3), 1 GiB streaming read %.2f TB/s\n",
              prop.name, prop.multiProcessorCount, peak_tflops, big_read_tbps);

  std::mt19937_64 rng(1234);
  std::vector<Row> rows;
  for (const Shape& s : kShapes) {
    if (quick && std::string(s.op).rfind("shared", 0) == 0) continue;
    if (!only.empty() && (std::string(s.model) + " " + s.op).find(only) == std::string::npos) continue;
    const W4Layout L = random_layout(rng, s);
    const int64_t n = L.rows, k = L.cols;
    const int64_t stream_bytes = w4_stream_bytes(L);
    const int64_t weight_bytes = n * k / 2 + n * k / 16;  // checkpoint NVFP4 codes + e4m3 scales
    const int copies = static_cast<int>(std::clamp<int64_t>(kRotateBytes / stream_bytes + 1, 1, 64));
    std::vector<DeviceW4Matrix> w;
    for (int c = 0; c < copies; ++c) w.push_back(DeviceW4Matrix::upload(L));
    // cuBLAS weights: the dequantized matrix, bf16 (one copy; more copies if small).
    const int64_t bf16_bytes = n * k * 2;
    const int bcopies = static_cast<int>(std::clamp<int64_t>(kRotateBytes / bf16_bytes + 1, 1, 64));
    std::vector<DeviceBuffer> wb;
    for (int c = 0; c < bcopies; ++c) {
      wb.emplace_back(bf16_bytes);
      dequantize_w4(w[0], wb.back().get(), false, true, nullptr);
    }
    DeviceBuffer roof(static_cast<size_t>(stream_bytes) * copies + 16);
    cudaMemset(roof.get(), 1, roof.bytes());
    const int64_t n16 = stream_bytes / 16;
    auto roof_fn = [&](int i) {
      read_roof_kernel<<<roof_blocks, 512>>>(roof.get<uint4>() + (i % copies) * n16, n16, sink.get<unsigned>());
    };
    const double roof_us = time_us(roof_fn, iters_for(roof_fn, 2000.0, 200.0));
    const Workspace ws = Workspace::for_matrix(n, k);
    const int64_t mmax = *std::max_element(ms.begin(), ms.end());
    DeviceBuffer x(mmax * k * 2), y(mmax * n * 2);
    fill_bf16_kernel<<<1024, 256>>>(x.get<__nv_bfloat16>(), mmax * k, 7);
    check_cuda(cudaDeviceSynchronize(), "setup");
    for (int64_t m : ms) {
      if (quick && m > 4096) continue;
      auto fp4_fn = [&](int i) {
        linear_w4a16(x.get<__nv_bfloat16>(), m, w[i % copies], y.get(), OutType::kBF16, ws, nullptr);
      };
      const float one = 1, zero = 0;
      auto cublas_fn = [&](int i) {
        CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, wb[i % bcopies].get(), CUDA_R_16BF, k,
                               x.get(), CUDA_R_16BF, k, &zero, y.get(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
      };
      const double fp4_us = time_us(fp4_fn, iters_for(fp4_fn, 2000.0, 200.0));
      // Both prefill kernels, pinned, for m > 64 (the heuristic's choice is fp4_us).
      double mma_us = 0, wgmma_us = 0;
      if (m > kDecodeMaxM) {
        for (W4Kernel kind : {W4Kernel::kPrefill, W4Kernel::kPrefillWgmma}) {
          auto fn = [&](int i) {
            linear_w4a16(x.get<__nv_bfloat16>(), m, w[i % copies], y.get(), OutType::kBF16, ws, nullptr,
                         W4Config{kind, 1, 1});
          };
          (kind == W4Kernel::kPrefill ? mma_us : wgmma_us) = time_us(fn, iters_for(fn, 2000.0, 200.0));
        }
      }
      const double cub_us = time_us(cublas_fn, iters_for(cublas_fn, 2000.0, 200.0));
      const W4Config c = choose_w4_config(m, n, k, prop.multiProcessorCount);
      const std::string cfg = c.kernel == W4Kernel::kDecode
                                  ? "decode mt=" + std::to_string(c.mtiles) + " splits=" + std::to_string(c.splits)
                                  : c.kernel == W4Kernel::kPrefillWgmma ? "prefill wgmma 128x128" : "prefill mma.sync 128x128";
      rows.push_back(Row{s.model, s.op, cfg, n, k, m, fp4_us, cub_us, roof_us, mma_us, wgmma_us, weight_bytes, stream_bytes});
      const Row& r = rows.back();
      std::fprintf(stderr, "%s %s m=%lld: fp4 %.1f us (mma.sync %.1f, wgmma %.1f), cublas %.1f us, roof %.1f us\n",
                   r.model.c_str(), r.op.c_str(), static_cast<long long>(m), fp4_us, mma_us, wgmma_us, cub_us, roof_us);
    }
  }

  std::printf("\n| model | op | N | K | M | fp4moe us | cuBLAS bf16 us | speedup | roof us | roof frac | fp4moe TB/s | fp4moe TFLOP/s | cuBLAS TFLOP/s | kernel |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    const double fl = 2.0 * r.m * r.n * r.k;
    std::printf("| %s | %s | %lld | %lld | %lld | %.1f | %.1f | %.2fx | %.1f | %.2f | %.2f | %.1f | %.1f | %s |\n",
                r.model.c_str(), r.op.c_str(), static_cast<long long>(r.n), static_cast<long long>(r.k),
                static_cast<long long>(r.m), r.fp4_us, r.cublas_us, r.cublas_us / r.fp4_us, r.roof_us,
                r.roof_us / r.fp4_us, r.stream_bytes / (r.fp4_us * 1e-6) / 1e12, fl / (r.fp4_us * 1e-6) / 1e12,
                fl / (r.cublas_us * 1e-6) / 1e12, r.config.c_str());
  }
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (!f) {
      std::perror(json_path.c_str());
      return 1;
    }
    std::fprintf(f, "{\"gpu\": \"%s\", \"sms\": %d, \"cublas_bf16_peak_tflops\": %.1f, \"read_1gib_tbps\": %.3f,\n \"rows\": [\n",
                 prop.name, prop.multiProcessorCount, peak_tflops, big_read_tbps);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      const double fl = 2.0 * r.m * r.n * r.k;
      std::fprintf(f,
                   "  {\"model\": \"%s\", \"op\": \"%s\", \"n\": %lld, \"k\": %lld, \"m\": %lld, \"fp4moe_us\": %.3f, "
                   "\"cublas_bf16_us\": %.3f, \"roof_us\": %.3f, \"weight_bytes\": %lld, \"stream_bytes\": %lld, "
                   "\"roof_fraction\": %.4f, \"tflops\": %.2f, \"cublas_tflops\": %.2f, \"speedup_vs_cublas\": %.3f, "
                   "\"kernel\": \"%s\", \"prefill_mma_sync_us\": %.3f, \"prefill_wgmma_us\": %.3f}%s\n",
                   r.model.c_str(), r.op.c_str(), static_cast<long long>(r.n), static_cast<long long>(r.k),
                   static_cast<long long>(r.m), r.fp4_us, r.cublas_us, r.roof_us, static_cast<long long>(r.weight_bytes),
                   static_cast<long long>(r.stream_bytes), r.roof_us / r.fp4_us, fl / (r.fp4_us * 1e-6) / 1e12,
                   fl / (r.cublas_us * 1e-6) / 1e12, r.cublas_us / r.fp4_us, r.config.c_str(), r.mma_us, r.wgmma_us,
                   i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, " ]}\n");
    std::fclose(f);
  }
  cublasDestroy(h);
  return 0;
}

// A CUDA or cuBLAS failure (no GPU, an old driver, out of memory) is one line and exit 1.
int main(int argc, char** argv) {
  try {
    return run_bench(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_linear: error: %s\n", e.what());
    return 1;
  }
}
