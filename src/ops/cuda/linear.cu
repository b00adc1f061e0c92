// Validation and dispatch for the CUDA linear layer (see linear.h).
#include "ops/cuda/linear.h"

#include <stdexcept>
#include <string>

#include "formats/blocks.h"
#include "ops/cuda/act_quant.h"
#include "ops/cuda/w4a16_kernels.h"

namespace fp4moe::cuda {

int device_sm_count() {
  static int sms = [] {
    int dev = 0, n = 0;
    check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
    check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute(SM count)");
    return n;
  }();
  return sms;
}

DeviceW4Matrix DeviceW4Matrix::upload(const W4Layout& L, cudaStream_t s) {
  DeviceW4Matrix d;
  d.format = L.format;
  d.rows = L.rows;
  d.cols = L.cols;
  d.ktiles = L.ktiles;
  d.num_ranges = static_cast<int>(L.ranges.size());
  d.codes = DeviceBuffer(L.codes.size(), "DeviceW4Matrix codes");
  d.scales = DeviceBuffer(L.scales.size(), "DeviceW4Matrix scales");
  d.codes.upload(L.codes.data(), L.codes.size(), s);
  d.scales.upload(L.scales.data(), L.scales.size(), s);
  std::vector<int32_t> begin;
  std::vector<float> scale;
  for (const OutputRange& r : L.ranges) {
    begin.push_back(static_cast<int32_t>(r.row_begin));
    scale.push_back(r.global_scale);
  }
  d.range_begin = DeviceBuffer(begin.size() * 4, "DeviceW4Matrix ranges");
  d.range_scale = DeviceBuffer(scale.size() * 4, "DeviceW4Matrix ranges");
  d.range_begin.upload(begin.data(), begin.size() * 4, s);
  d.range_scale.upload(scale.data(), scale.size() * 4, s);
  d.stream_bytes = w4_stream_bytes(L);
  check_cuda(cudaStreamSynchronize(s), "DeviceW4Matrix::upload");
  return d;
}

void DeviceW4Matrix::set_global_scales(const std::vector<float>& g, cudaStream_t s) {
  if (static_cast<int>(g.size()) != num_ranges)
    throw std::invalid_argument("set_global_scales: " + std::to_string(g.size()) + " scales for " +
                                std::to_string(num_ranges) + " output ranges");
  range_scale.upload(g.data(), g.size() * 4, s);
  check_cuda(cudaStreamSynchronize(s), "set_global_scales");
}

Workspace Workspace::for_matrix(int64_t n, int64_t k, std::optional<W4Config> pinned) {
  const int splits = pinned ? pinned->splits : decode_splits(n, k, device_sm_count(), 1);
  Workspace w;
  const int64_t bytes = w4_decode_workspace_bytes(n, splits);
  if (bytes > 0) {
    w.buf = DeviceBuffer(static_cast<size_t>(bytes), "linear workspace");
    check_cuda(cudaMemset(w.buf.get(), 0, static_cast<size_t>(bytes)), "linear workspace memset");
    check_cuda(cudaDeviceSynchronize(), "linear workspace memset (sync)");
  }
  return w;
}

namespace {

W4Args make_args(const DeviceW4Matrix& w) {
  W4Args a;
  a.nvfp4 = w.format == MatrixFormat::kNVFP4;
  a.codes = w.codes.get<uint8_t>();
  a.scales = w.scales.get<uint8_t>();
  a.ktiles = w.ktiles;
  a.range_begin = w.range_begin.get<int32_t>();
  a.range_scale = w.range_scale.get<float>();
  a.num_ranges = w.num_ranges;
  a.n = w.rows;
  a.k = w.cols;
  return a;
}

std::string describe(const char* op, int64_t m, const DeviceW4Matrix& w) {
  return std::string(op) + ": x " + shape_str({m, w.cols}) + " . W^T, W " + to_string(w.format) + " " +
         shape_str({w.rows, w.cols});
}

}  // namespace

void linear_w4a16(const __nv_bfloat16* x, int64_t m, const DeviceW4Matrix& w, void* y, OutType out,
                  const Workspace& ws, cudaStream_t s, std::optional<W4Config> config, const float* alpha) {
  const std::string what = describe("linear_w4a16", m, w);
  if (m < 0) throw std::invalid_argument(what + ": negative token count");
  if (w.format != MatrixFormat::kNVFP4 && w.format != MatrixFormat::kMXFP4)
    throw std::invalid_argument(what + ": the weight must be NVFP4 or MXFP4");
  const int block = w.format == MatrixFormat::kNVFP4 ? kNvfp4Block : kMxfp4Block;
  if (w.cols % block != 0)
    throw std::invalid_argument(what + ": k is not a multiple of the " + to_string(w.format) + " block (" +
                                std::to_string(block) + ")");
  if (m == 0 || w.rows == 0) return;  // nothing to compute: no launch
  if (!x || !y) throw std::invalid_argument(what + ": null activation or output pointer");
  if (w.rows > (int64_t{1} << 31) - 16) throw std::invalid_argument(what + ": more than 2^31 output rows");
  const W4Config c = config ? *config : choose_w4_config(m, w.rows, w.cols, device_sm_count());
  W4Args a = make_args(w);
  a.x = x;
  a.y = y;
  a.y_f32 = out == OutType::kF32;
  a.m = m;
  a.alpha = alpha;
  if (c.kernel == W4Kernel::kDecode) {
    if (m > c.mtiles * 8 || (c.mtiles != 1 && c.mtiles != 2 && c.mtiles != 4 && c.mtiles != 8))
      throw std::invalid_argument(what + ": decode config with " + std::to_string(c.mtiles) +
                                  " token tiles cannot take m = " + std::to_string(m));
    if (c.splits < 1) throw std::invalid_argument(what + ": decode config needs splits >= 1");
    if (c.splits > 1 && ws.buf.bytes() < static_cast<size_t>(w4_decode_workspace_bytes(w.rows, c.splits)))
      throw std::invalid_argument(what + ": workspace too small for " + std::to_string(c.splits) +
                                  " splits (use Workspace::for_matrix)");
    a.workspace = ws.buf.get();
    check_cuda(launch_w4a16_decode(a, c, s), what + " (decode, " + std::to_string(c.mtiles) + " token tiles, " +
                                                 std::to_string(c.splits) + " splits)");
  } else if (c.kernel == W4Kernel::kPrefillWgmma) {
    check_cuda(launch_w4a16_prefill_wgmma(a, s), what + " (prefill, wgmma)");
  } else {
    check_cuda(launch_w4a16_prefill(a, s), what + " (prefill, mma.sync)");
  }
}

W4a4Scratch W4a4Scratch::for_shape(int64_t m, int64_t k) {
  W4a4Scratch sc;
  sc.x_dq = DeviceBuffer(static_cast<size_t>(m * k * 2), "W4A4 scratch");
  sc.packed = DeviceBuffer(static_cast<size_t>(m * k / 2), "W4A4 scratch");
  sc.scales = DeviceBuffer(static_cast<size_t>(m * (k / kNvfp4Block)), "W4A4 scratch");
  sc.scalars = DeviceBuffer(2 * sizeof(float), "W4A4 scratch");
  return sc;
}

void linear_w4a4(const __nv_bfloat16* x, int64_t m, const DeviceW4Matrix& w, bool dynamic, const float* gs,
                 void* y, OutType out, W4a4Scratch& scratch, const Workspace& ws, cudaStream_t s) {
  const std::string what = describe("linear_w4a4", m, w);
  if (w.format != MatrixFormat::kNVFP4) throw std::invalid_argument(what + ": W4A4 emulation needs an NVFP4 weight");
  if (m < 0) throw std::invalid_argument(what + ": negative token count");
  if (m == 0 || w.rows == 0) return;
  if (scratch.x_dq.bytes() < static_cast<size_t>(m * w.cols * 2))
    throw std::invalid_argument(what + ": scratch too small (use W4a4Scratch::for_shape)");
  ActQuantArgs q;
  q.x = x;
  q.m = m;
  q.k = w.cols;
  q.dynamic = dynamic;
  q.gs = gs;
  q.amax_bits = scratch.scalars.get<unsigned>();
  q.packed = scratch.packed.get<uint8_t>();
  q.scales = scratch.scales.get<uint8_t>();
  q.x_dq = scratch.x_dq.get<__nv_bfloat16>();
  q.dequant_scale = scratch.scalars.get<float>() + 1;
  if (!dynamic && !gs) {
    throw std::invalid_argument(what + ": static W4A4 needs the device global scale gs = 1/input_scale");
  }
  quantize_nvfp4_activations_cuda(q, s);
  linear_w4a16(q.x_dq, m, w, y, out, ws, s, std::nullopt, q.dequant_scale);
}

void dequantize_w4(const DeviceW4Matrix& w, void* out, bool out_f32, bool with_global, cudaStream_t s) {
  check_cuda(launch_w4_dequantize(make_args(w), out, out_f32, with_global, s),
             "dequantize_w4: W " + std::string(to_string(w.format)) + " " + shape_str({w.rows, w.cols}));
}

}  // namespace fp4moe::cuda
