// CUDA error handling and device memory for the CUDA backend (host code).
// Launchers return cudaError_t; the validated entry points (linear.h, act_quant.h) turn a
// failure into an exception whose message names the op and the shapes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace fp4moe::cuda {

// Throws std::runtime_error("<what>: <cuda error name>: <description>").
inline void check_cuda(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess)
    throw std::runtime_error(what + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

// Empty when device 0 can run the kernels (they are built for sm_90a only), else why not: no
// usable device (with the CUDA error), no device, or another GPU (by name and compute capability).
inline std::string sm90_device_problem() {
  int n = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&n); e != cudaSuccess)
    return std::string("no usable CUDA device (") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) + ")";
  if (n == 0) return "no CUDA device";
  cudaDeviceProp p{};
  if (const cudaError_t e = cudaGetDeviceProperties(&p, 0); e != cudaSuccess)
    return std::string("cudaGetDeviceProperties: ") + cudaGetErrorName(e);
  if (p.major != 9)
    return std::string("needs an sm_90 (Hopper) GPU, found ") + p.name + " (sm_" + std::to_string(p.major) +
           std::to_string(p.minor) + ")";
  return "";
}

inline std::string shape_str(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  bool first = true;
  for (int64_t d : dims) {
    s += (first ? "" : ", ") + std::to_string(d);
    first = false;
  }
  return s + "]";
}

// Owning device allocation (cudaMalloc; bytes only, typed access by the caller).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes, const char* what = "DeviceBuffer") : bytes_(bytes) {
    if (bytes > 0) check_cuda(cudaMalloc(&ptr_, bytes), std::string(what) + ": cudaMalloc(" + std::to_string(bytes) + " bytes)");
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_) cudaFree(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  template <class T = void>
  T* get() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

  void upload(const void* src, size_t n, cudaStream_t s = nullptr) {
    check_cuda(cudaMemcpyAsync(ptr_, src, n, cudaMemcpyHostToDevice, s), "DeviceBuffer::upload");
  }
  void download(void* dst, size_t n, cudaStream_t s = nullptr) const {
    check_cuda(cudaMemcpyAsync(dst, ptr_, n, cudaMemcpyDeviceToHost, s), "DeviceBuffer::download");
    check_cuda(cudaStreamSynchronize(s), "DeviceBuffer::download (sync)");
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A stream owned by the caller's scope.
class Stream {
 public:
  Stream() { check_cuda(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() { cudaStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const { check_cuda(cudaStreamSynchronize(s_), "cudaStreamSynchronize"); }

 private:
  cudaStream_t s_ = nullptr;
};

// Number of SMs of the current device (cached per process).
int device_sm_count();

}  // namespace fp4moe::cuda
