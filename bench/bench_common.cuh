// What both benchmarks share (bench_linear.cu, bench_moe.cu): the streaming-read roof kernel,
// device-side random fills, and the timer. The timer follows DESIGN.md's protocol: a warm-up,
// CUDA events around many back-to-back calls, the median of several repeats.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/cuda/cuda_check.h"

// A benchmark cannot go on past a failed cuBLAS call: report where, and stop.
#define CUBLAS_OK(x)                                                                 \
  do {                                                                               \
    const cublasStatus_t st_ = (x);                                                  \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                              \
      std::fprintf(stderr, "cuBLAS error %d at %s:%d\n", st_, __FILE__, __LINE__);   \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

namespace fp4moe::bench {

// Device 0's properties; the kernels are built for sm_90a only, so any other GPU is refused
// here with its name instead of failing later with "no kernel image".
inline cudaDeviceProp hopper_device() {
  if (const std::string why = fp4moe::cuda::sm90_device_problem(); !why.empty()) throw std::runtime_error(why);
  cudaDeviceProp prop{};
  fp4moe::cuda::check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  return prop;
}

// Streaming read: 16-byte loads, evict-first, a grid of several CTAs per SM; one word per
// CTA is written only if the xor of everything it read hits a constant, so the loads cannot
// be dropped by the compiler.
__global__ void read_roof_kernel(const uint4* p, int64_t n16, unsigned* sink) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n16;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) sink[blockIdx.x] = acc;  // practically never taken
}

// splitmix64's finalizer: a cheap, well-mixed hash of an index and a seed.
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z ^= z >> 31;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 29;
  return z;
}

// Uniform values in [-1, 1) as bf16 (never zeros: timing zeros flatters kernels).
__global__ void fill_bf16_kernel(__nv_bfloat16* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = __float2bfloat16((static_cast<float>(mix64((i + 1) * 0x9E3779B97F4A7C15ull ^ seed) & 0xFFFF) / 65536.0f - 0.5f) *
                            2.0f);
}

// Command-line numbers: the whole text must be a number in [lo, hi], else one line that names
// the program and the flag, and exit 2 (a usage error, as for an unknown flag).
[[noreturn]] inline void flag_error(const char* prog, const std::string& flag, const std::string& text, const std::string& want) {
  std::fprintf(stderr, "%s: %s takes %s, got '%s'\n", prog, flag.c_str(), want.c_str(), text.c_str());
  std::exit(2);
}
inline int64_t flag_int(const char* prog, const std::string& flag, const std::string& text, int64_t lo, int64_t hi) {
  const std::string want = "an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE || v < lo || v > hi)
    flag_error(prog, flag, text, want);
  return v;
}
inline double flag_double(const char* prog, const std::string& flag, const std::string& text, double lo, double hi) {
  char want[96];
  std::snprintf(want, sizeof want, "a number in %g..%g", lo, hi);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE || !(v >= lo && v <= hi))
    flag_error(prog, flag, text, want);
  return v;
}
// The comma-separated fields of text (one empty field for an empty text).
inline std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> v;
  for (size_t pos = 0;;) {
    const size_t c = text.find(',', pos);
    v.push_back(text.substr(pos, c == std::string::npos ? std::string::npos : c - pos));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  return v;
}
// A comma-separated list of integers in [lo, hi], at least one.
inline std::vector<int64_t> flag_int_list(const char* prog, const std::string& flag, const std::string& text, int64_t lo,
                                          int64_t hi) {
  std::vector<int64_t> v;
  for (const std::string& f : split_commas(text)) v.push_back(flag_int(prog, flag, f, lo, hi));
  return v;
}

// Median over repeats of (elapsed / iters) in microseconds; fn(i) runs call i (callers rotate
// their inputs by i so weights never sit in L2).
inline double time_us(const std::function<void(int)>& fn, int iters, int repeats = 7) {
  cudaEvent_t a, b;
  cuda::check_cuda(cudaEventCreate(&a), "benchmark events");
  cuda::check_cuda(cudaEventCreate(&b), "benchmark events");
  for (int i = 0; i < 3; ++i) fn(i);
  std::vector<double> t;
  int call = 0;
  for (int r = 0; r < repeats; ++r) {
    cudaEventRecord(a);
    for (int i = 0; i < iters; ++i) fn(call++);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms * 1000.0 / iters);
  }
  cuda::check_cuda(cudaGetLastError(), "benchmark timing");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Calls per timed repeat: enough for about budget_us of work, between 2 and max_iters.
inline int iters_for(const std::function<void(int)>& fn, double budget_us, double max_iters) {
  const double one = time_us(fn, 1, 3);
  return static_cast<int>(std::clamp(budget_us / std::max(one, 1.0), 2.0, max_iters));
}

}  // namespace fp4moe::bench
