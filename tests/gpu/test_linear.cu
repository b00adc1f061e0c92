// CUDA W4A16 linear (ops/cuda/linear.h) against the CPU reference fp4moe::cpu::linear on
// the same fresh random inputs (bf16 activations, quantized random weights), outputs
// poisoned with NaN before each run.
//   Metric: relative L2 error ||y - y_ref|| / ||y_ref|| in fp64 over the whole output,
//   <= 2e-3 for bf16 outputs, where y_ref is the fp32 reference rounded to bf16 (so a few
//   outputs cannot fail on the output rounding alone; what remains is the fp32 summation
//   order, which flips an occasional last bit), <= 1e-4 for fp32 outputs (same exact
//   products, only the summation order differs); and no NaN/Inf anywhere.
// Covered: NVFP4 and MXFP4; token counts 1..4096 (both kernels, heuristic and pinned);
// rows not a multiple of 16 and k not a multiple of 64; fused projections whose parts
// have different global scales; the DeepSeek-V4 shapes; m = 0; bad k; CUDA-graph replay
// after changing the inputs and the global scales in device memory.
#include <gtest/gtest.h>

#include <optional>

#include "gpu_test_util.h"
#include "ops/cpu/linear_ref.h"
#include "ops/cuda/linear.h"
#include "util/test_util.h"

namespace fp4moe {
namespace {

using cuda::OutType;
using cuda::W4Config;
using cuda::W4Kernel;

constexpr double kTolBf16 = 2e-3;
constexpr double kTolF32 = 1e-4;

// A weight of `parts` row blocks quantized separately (different global scales, as in
// fused q_a|kv or gate|up), concatenated.
Matrix make_weight(std::mt19937_64& rng, MatrixFormat f, const std::vector<int64_t>& part_rows, int64_t k) {
  std::vector<Matrix> parts;
  float stddev = 0.02f;
  for (int64_t rows : part_rows) {
    const auto w = test::random_bf16(rng, rows * k, stddev);
    parts.push_back(f == MatrixFormat::kNVFP4 ? quantize_nvfp4_weight(w.data(), rows, k) : quantize_mxfp4(w.data(), rows, k));
    stddev *= 7.0f;
  }
  if (parts.size() == 1) return parts[0];
  std::vector<const Matrix*> ptrs;
  for (const Matrix& p : parts) ptrs.push_back(&p);
  return concat_rows(ptrs);
}

struct Case {
  MatrixFormat format = MatrixFormat::kNVFP4;
  int64_t m = 1, k = 256;
  std::vector<int64_t> parts{256};
  bool f32 = false;
  std::optional<W4Config> pin;
};

std::string describe(const Case& c) {
  std::string s = std::string(to_string(c.format)) + " m=" + std::to_string(c.m) + " k=" + std::to_string(c.k) + " rows=";
  for (int64_t p : c.parts) s += std::to_string(p) + "|";
  s += c.f32 ? " out=f32" : " out=bf16";
  if (c.pin) s += c.pin->kernel == W4Kernel::kDecode ? " pinned decode mt=" + std::to_string(c.pin->mtiles) + " splits=" + std::to_string(c.pin->splits) : " pinned prefill";
  return s;
}

void run_case(std::mt19937_64& rng, const Case& c) {
  SCOPED_TRACE(describe(c));
  const Matrix w = make_weight(rng, c.format, c.parts, c.k);
  const int64_t n = w.rows;
  const auto x = test::random_bf16(rng, c.m * c.k);
  std::vector<float> ref(static_cast<size_t>(c.m * n));
  cpu::linear(x.data(), c.m, w.view(), ref.data());

  const cuda::DeviceW4Matrix d = cuda::DeviceW4Matrix::upload(cuda::repack_w4(w.view()));
  const cuda::Workspace ws = cuda::Workspace::for_matrix(n, c.k, c.pin);
  cuda::DeviceBuffer dx = test::to_device_bf16(x);
  cuda::DeviceBuffer dy(static_cast<size_t>(c.m * n * (c.f32 ? 4 : 2)) + 4);
  test::poison(dy);
  cuda::linear_w4a16(dx.get<__nv_bfloat16>(), c.m, d, dy.get(), c.f32 ? OutType::kF32 : OutType::kBF16, ws, nullptr, c.pin);
  cuda::check_cuda(cudaDeviceSynchronize(), "linear_w4a16 " + describe(c));
  const auto y = test::from_device(dy, static_cast<size_t>(c.m * n), c.f32);
  EXPECT_EQ(test::count_non_finite(y.data(), static_cast<int64_t>(y.size())), 0);
  if (!c.f32)
    for (float& v : ref) v = round_to_bf16(v);
  const double err = test::rel_l2(y, ref);
  EXPECT_LE(err, c.f32 ? kTolF32 : kTolBf16) << "relative L2 error";
}

W4Config decode(int mt, int splits) { return W4Config{W4Kernel::kDecode, mt, splits}; }
W4Config prefill() { return W4Config{W4Kernel::kPrefill, 1, 1}; }

TEST(GpuLinear, TokenCountsHeuristic) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  for (int64_t m : {1, 2, 3, 7, 16, 31, 64, 65, 128, 1000, 4096})
    for (MatrixFormat f : {MatrixFormat::kNVFP4, MatrixFormat::kMXFP4})
      run_case(r.rng, Case{f, m, 1024, {256}, false, std::nullopt});
}

TEST(GpuLinear, OddShapesBothKernelsBothOutputs) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  for (int64_t m : {1, 3, 31, 64, 65, 130})
    for (bool f32 : {false, true}) {
      run_case(r.rng, Case{MatrixFormat::kNVFP4, m, 592, {200}, f32, std::nullopt});   // k % 64 != 0, rows % 16 != 0
      run_case(r.rng, Case{MatrixFormat::kMXFP4, m, 608, {37}, f32, std::nullopt});
      run_case(r.rng, Case{MatrixFormat::kNVFP4, m, 592, {200}, f32, prefill()});
    }
}

W4Config prefill_wgmma() { return W4Config{W4Kernel::kPrefillWgmma, 1, 1}; }

TEST(GpuLinear, WgmmaPrefillPinned) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  for (int64_t m : {1, 65, 130, 1000})
    for (bool f32 : {false, true}) {
      run_case(r.rng, Case{MatrixFormat::kNVFP4, m, 592, {200}, f32, prefill_wgmma()});  // odd rows and k
      run_case(r.rng, Case{MatrixFormat::kMXFP4, m, 608, {37}, f32, prefill_wgmma()});
    }
  run_case(r.rng, Case{MatrixFormat::kNVFP4, 4096, 1024, {256, 128}, false, prefill_wgmma()});
  run_case(r.rng, Case{MatrixFormat::kNVFP4, 300, 4096, {2048, 2048}, false, prefill_wgmma()});
  // Enough row tiles x 256-token tiles to fill 132 SMs: the 256-token variant, with a ragged
  // last token tile, odd rows and k.
  run_case(r.rng, Case{MatrixFormat::kNVFP4, 520, 592, {6000}, false, prefill_wgmma()});
  run_case(r.rng, Case{MatrixFormat::kMXFP4, 520, 608, {3000, 3000}, true, prefill_wgmma()});
}

TEST(GpuLinear, PinnedDecodeConfigs) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  for (int splits : {1, 2, 3, 7, 32})
    for (auto [m, mt] : {std::pair<int64_t, int>{1, 1}, {5, 8}, {16, 2}, {17, 4}, {64, 8}})
      run_case(r.rng, Case{MatrixFormat::kNVFP4, m, 2048, {144}, false, decode(mt, splits)});
}

TEST(GpuLinear, FusedProjectionsKeepEachGlobalScale) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  for (int64_t m : {1, 16, 200})
    for (MatrixFormat f : {MatrixFormat::kNVFP4, MatrixFormat::kMXFP4})
      run_case(r.rng, Case{f, m, 512, {96, 48}, false, std::nullopt});
}

// DeepSeek-V4-Flash linear shapes (Pro shapes run in the benchmark; the CPU reference makes
// them slow here). Decode token counts and one prefill count.
TEST(GpuLinear, DeepSeekV4FlashShapes) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  struct S { std::vector<int64_t> parts; int64_t k; };
  const S shapes[] = {{{1024, 512}, 4096},  // fused q_a|kv
                      {{32768}, 1024},      // q_b
                      {{4096}, 8192},       // o_b
                      {{2048, 2048}, 4096}, // expert gate|up
                      {{4096}, 2048}};      // expert down
  for (const S& s : shapes)
    for (int64_t m : {1, 16, 72}) run_case(r.rng, Case{MatrixFormat::kNVFP4, m, s.k, s.parts, false, std::nullopt});
  run_case(r.rng, Case{MatrixFormat::kMXFP4, 4, 4096, {2048, 2048}, false, std::nullopt});
  run_case(r.rng, Case{MatrixFormat::kMXFP4, 4, 2048, {4096}, false, std::nullopt});
}

TEST(GpuLinear, ZeroTokensLaunchesNothing) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  const Matrix w = make_weight(r.rng, MatrixFormat::kNVFP4, {64}, 128);
  const cuda::DeviceW4Matrix d = cuda::DeviceW4Matrix::upload(cuda::repack_w4(w.view()));
  cuda::DeviceBuffer dy(64);
  test::poison(dy);
  EXPECT_NO_THROW(cuda::linear_w4a16(nullptr, 0, d, dy.get(), OutType::kF32, cuda::Workspace{}, nullptr));
  const auto y = test::download_vec<uint32_t>(dy, 16);
  for (uint32_t v : y) EXPECT_EQ(v, 0xFFFFFFFFu) << "output written for m = 0";
}

TEST(GpuLinear, KNotAMultipleOfTheBlockIsAClearError) {
  FP4MOE_REQUIRE_GPU();
  cuda::DeviceW4Matrix d;
  d.format = MatrixFormat::kMXFP4;
  d.rows = 64;
  d.cols = 48;  // not a multiple of 32
  d.num_ranges = 1;
  cuda::DeviceBuffer dx(64 * 48 * 2), dy(64 * 64 * 4);
  try {
    cuda::linear_w4a16(dx.get<__nv_bfloat16>(), 2, d, dy.get(), OutType::kF32, cuda::Workspace{}, nullptr);
    FAIL() << "accepted k = 48 for MXFP4";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("linear_w4a16"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[2, 48]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("not a multiple"), std::string::npos) << msg;
  }
}

// Capture decode (split-K) and prefill calls once; replay after changing the activations
// and the global scales in device memory: the replay must give the new results.
TEST(GpuLinear, CudaGraphReplaySeesNewInputsAndScales) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  const int64_t k = 1024;
  const Matrix w = make_weight(r.rng, MatrixFormat::kNVFP4, {256, 128}, k);
  const int64_t n = w.rows;
  cuda::DeviceW4Matrix d = cuda::DeviceW4Matrix::upload(cuda::repack_w4(w.view()));
  const W4Config dec = decode(1, 4);
  const cuda::Workspace ws = cuda::Workspace::for_matrix(n, k, dec);
  const int64_t m_dec = 3, m_pre = 130;
  cuda::DeviceBuffer dx_dec(m_dec * k * 2), dx_pre(m_pre * k * 2), dy_dec(m_dec * n * 2), dy_pre(m_pre * n * 2);
  cuda::Stream s;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  // One eager call of each kernel first: the prefill kernel raises its shared-memory limit
  // on first use, which is not a stream operation and is kept out of the capture.
  cuda::linear_w4a16(dx_dec.get<__nv_bfloat16>(), m_dec, d, dy_dec.get(), OutType::kBF16, ws, s.get(), dec);
  cuda::linear_w4a16(dx_pre.get<__nv_bfloat16>(), m_pre, d, dy_pre.get(), OutType::kBF16, ws, s.get(), prefill());
  s.sync();
  cuda::check_cuda(cudaStreamBeginCapture(s.get(), cudaStreamCaptureModeGlobal), "begin capture");
  cuda::linear_w4a16(dx_dec.get<__nv_bfloat16>(), m_dec, d, dy_dec.get(), OutType::kBF16, ws, s.get(), dec);
  cuda::linear_w4a16(dx_pre.get<__nv_bfloat16>(), m_pre, d, dy_pre.get(), OutType::kBF16, ws, s.get(), prefill());
  cuda::check_cuda(cudaStreamEndCapture(s.get(), &graph), "end capture");
  cuda::check_cuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate");

  Matrix wcur = w;
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("replay " + std::to_string(round));
    const auto xd = test::random_bf16(r.rng, m_dec * k), xp = test::random_bf16(r.rng, m_pre * k);
    test::upload_bf16(dx_dec, xd);
    test::upload_bf16(dx_pre, xp);
    if (round > 0) {  // new global scales, written to device memory only
      wcur.ranges[0].global_scale *= 3.0f;
      wcur.ranges[1].global_scale *= 0.25f;
      d.set_global_scales({wcur.ranges[0].global_scale, wcur.ranges[1].global_scale});
    }
    test::poison(dy_dec);
    test::poison(dy_pre);
    cuda::check_cuda(cudaGraphLaunch(exec, s.get()), "graph launch");
    s.sync();
    std::vector<float> rd(static_cast<size_t>(m_dec * n)), rp(static_cast<size_t>(m_pre * n));
    cpu::linear(xd.data(), m_dec, wcur.view(), rd.data());
    cpu::linear(xp.data(), m_pre, wcur.view(), rp.data());
    for (float& v : rd) v = round_to_bf16(v);
    for (float& v : rp) v = round_to_bf16(v);
    EXPECT_LE(test::rel_l2(test::from_device(dy_dec, rd.size(), false), rd), kTolBf16) << "decode";
    EXPECT_LE(test::rel_l2(test::from_device(dy_pre, rp.size(), false), rp), kTolBf16) << "prefill";
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

}  // namespace
}  // namespace fp4moe
