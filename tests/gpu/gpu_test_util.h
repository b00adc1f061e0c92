// Helpers for the GPU tests (tests/gpu/*.cu): skip without a device, move data between host
// fp32 and device bf16/fp32, poison outputs before each run.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "formats/codecs.h"
#include "ops/cuda/cuda_check.h"

namespace fp4moe::test {

// Empty when a CUDA device is usable, else the reason (tests GTEST_SKIP with it).
inline std::string no_gpu_reason() { return cuda::sm90_device_problem(); }

#define FP4MOE_REQUIRE_GPU()                                        \
  do {                                                              \
    const std::string why_ = ::fp4moe::test::no_gpu_reason();       \
    if (!why_.empty()) GTEST_SKIP() << "GPU test skipped: " << why_; \
  } while (0)

// fp32 values (already bf16-representable) -> device bf16.
inline cuda::DeviceBuffer to_device_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = bf16_from_float(v[i]);
  cuda::DeviceBuffer d(h.size() * 2);
  d.upload(h.data(), h.size() * 2);
  cuda::check_cuda(cudaDeviceSynchronize(), "to_device_bf16");
  return d;
}
inline void upload_bf16(cuda::DeviceBuffer& d, const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = bf16_from_float(v[i]);
  d.upload(h.data(), h.size() * 2);
  cuda::check_cuda(cudaDeviceSynchronize(), "upload_bf16");
}

// Device output (bf16 or fp32) -> host fp32.
inline std::vector<float> from_device(const cuda::DeviceBuffer& d, size_t n, bool f32) {
  std::vector<float> out(n);
  if (f32) {
    d.download(out.data(), n * 4);
  } else {
    std::vector<uint16_t> h(n);
    d.download(h.data(), n * 2);
    for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(h[i]);
  }
  return out;
}

// NaN fill (0xFF bytes are NaN in bf16 and fp32): a kernel that skips an output shows up.
inline void poison(cuda::DeviceBuffer& d) {
  cuda::check_cuda(cudaMemset(d.get(), 0xFF, d.bytes()), "poison");
  cuda::check_cuda(cudaDeviceSynchronize(), "poison (sync)");
}

template <class T>
std::vector<T> download_vec(const cuda::DeviceBuffer& d, size_t n) {
  std::vector<T> v(n);
  d.download(v.data(), n * sizeof(T));
  return v;
}

}  // namespace fp4moe::test
