// NVFP4 activation quantization on the GPU against the CPU reference
// fp4moe::quantize_nvfp4_activations: packed codes and scale bytes BITWISE equal (static and
// dynamic global scale, row-major and 128x4-swizzled scales, odd row counts), with the
// failure-class inputs mixed in (all-zero blocks, huge values that saturate e4m3, tiny
// values, +-Inf, NaN); then the W4A4-emulation linear against cpu::linear_w4a4
// (relative L2 error <= 2e-3 on bf16 outputs against the reference rounded to bf16, no NaN).
#include <gtest/gtest.h>

#include <limits>

#include "formats/blocks.h"
#include "gpu_test_util.h"
#include "ops/cpu/linear_ref.h"
#include "ops/cuda/act_quant.h"
#include "ops/cuda/linear.h"
#include "util/test_util.h"

namespace fp4moe {
namespace {

std::vector<float> nasty_activations(std::mt19937_64& rng, int64_t m, int64_t k) {
  auto x = test::random_bf16(rng, m * k, 2.0f);
  std::uniform_int_distribution<int64_t> pick(0, m * k - 1);
  for (int64_t b = 0; b < m * k / 16; b += 7)  // zero blocks
    for (int i = 0; i < 16; ++i) x[static_cast<size_t>(b * 16 + i)] = 0.0f;
  for (int i = 0; i < 8; ++i) x[static_cast<size_t>(pick(rng))] = round_to_bf16(3.0e38f);  // huge, bf16-exact
  for (int i = 0; i < 8; ++i) x[static_cast<size_t>(pick(rng))] = round_to_bf16(1.0e-30f);
  x[static_cast<size_t>(pick(rng))] = std::numeric_limits<float>::infinity();
  x[static_cast<size_t>(pick(rng))] = -std::numeric_limits<float>::infinity();
  x[static_cast<size_t>(pick(rng))] = std::numeric_limits<float>::quiet_NaN();
  return x;
}

void check_quant(std::mt19937_64& rng, int64_t m, int64_t k, bool dynamic, ScaleLayout layout, bool nasty) {
  SCOPED_TRACE("m=" + std::to_string(m) + " k=" + std::to_string(k) + (dynamic ? " dynamic" : " static") +
               (layout == ScaleLayout::kRowMajor ? " row-major" : " swizzled") + (nasty ? " special values" : ""));
  const auto x = nasty ? nasty_activations(rng, m, k) : test::random_bf16(rng, m * k, 3.0f);
  const ActGlobalScale g = dynamic ? act_global_scale_dynamic(x.data(), m * k) : act_global_scale_static(0.0123f);
  const Nvfp4Activations ref = quantize_nvfp4_activations(x.data(), m, k, g, layout);

  cuda::DeviceBuffer dx = test::to_device_bf16(x);
  const int64_t sbytes = layout == ScaleLayout::kRowMajor ? m * (k / 16) : swizzled_128x4_bytes(m, k / 16);
  cuda::DeviceBuffer packed(static_cast<size_t>(m * k / 2)), scales(static_cast<size_t>(sbytes)),
      xdq(static_cast<size_t>(m * k * 2)), scalars(16);
  test::poison(packed);
  test::poison(scales);
  test::poison(xdq);
  test::poison(scalars);
  scalars.upload(&g.gs, 4);
  cuda::ActQuantArgs a;
  a.x = dx.get<__nv_bfloat16>();
  a.m = m;
  a.k = k;
  a.dynamic = dynamic;
  a.gs = scalars.get<float>();
  a.amax_bits = scalars.get<unsigned>() + 1;
  a.packed = packed.get<uint8_t>();
  a.scales = scales.get<uint8_t>();
  a.layout = layout;
  a.x_dq = xdq.get<__nv_bfloat16>();
  a.dequant_scale = scalars.get<float>() + 2;
  cuda::quantize_nvfp4_activations_cuda(a, nullptr);
  cuda::check_cuda(cudaDeviceSynchronize(), "act quant");

  EXPECT_TRUE(test::download_vec<uint8_t>(packed, ref.packed.size()) == ref.packed) << "packed codes differ";
  EXPECT_TRUE(test::download_vec<uint8_t>(scales, ref.scales.size()) == ref.scales) << "scales differ";
  const auto sc = test::download_vec<float>(scalars, 3);
  if (dynamic) EXPECT_EQ(f32_bits(sc[2]), f32_bits(g.dequant_scale)) << "dequant scale";
  // x_dq = code * block scale, exactly (bf16 holds e2m1 x e4m3).
  Nvfp4Activations unscaled = ref;
  unscaled.global.dequant_scale = 1.0f;
  const auto want = dequantize_nvfp4_activations(unscaled);
  const auto got = test::from_device(xdq, want.size(), false);
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (!(f32_bits(got[i]) == f32_bits(want[i]) || (f32_is_nan(got[i]) && f32_is_nan(want[i])))) ++bad;
  EXPECT_EQ(bad, 0) << "dequantized activations differ (bitwise)";
}

TEST(GpuActQuant, BitwiseAgainstCpu) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  for (int64_t m : {1, 3, 130, 1000})
    for (bool dynamic : {false, true})
      for (ScaleLayout l : {ScaleLayout::kRowMajor, ScaleLayout::kSwizzled128x4}) {
        check_quant(r.rng, m, 272, dynamic, l, false);
        check_quant(r.rng, m, 272, dynamic, l, true);
      }
  check_quant(r.rng, 7, 7168, true, ScaleLayout::kSwizzled128x4, true);
}

TEST(GpuActQuant, BadShapeIsAClearError) {
  FP4MOE_REQUIRE_GPU();
  cuda::ActQuantArgs a;
  a.m = 2;
  a.k = 40;
  try {
    cuda::quantize_nvfp4_activations_cuda(a, nullptr);
    FAIL() << "accepted k = 40";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 40]"), std::string::npos) << e.what();
  }
}

TEST(GpuLinearW4a4, MatchesCpuEmulation) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  for (bool dynamic : {false, true})
    for (int64_t m : {1, 16, 65, 300}) {
      SCOPED_TRACE("m=" + std::to_string(m) + (dynamic ? " dynamic" : " static"));
      const int64_t n = 200, k = 1024;
      const auto wv = test::random_bf16(r.rng, n * k, 0.02f);
      const Matrix w = quantize_nvfp4_weight(wv.data(), n, k);
      const auto x = test::random_bf16(r.rng, m * k, 1.0f);
      const ActGlobalScale g = dynamic ? act_global_scale_dynamic(x.data(), m * k) : act_global_scale_static(0.004f);
      std::vector<float> ref(static_cast<size_t>(m * n));
      cpu::linear_w4a4(x.data(), m, w.view(), g, ref.data());

      const cuda::DeviceW4Matrix d = cuda::DeviceW4Matrix::upload(cuda::repack_w4(w.view()));
      const cuda::Workspace ws = cuda::Workspace::for_matrix(n, k);
      cuda::W4a4Scratch scratch = cuda::W4a4Scratch::for_shape(m, k);
      cuda::DeviceBuffer dx = test::to_device_bf16(x), dgs(4), dy(static_cast<size_t>(m * n * 2));
      dgs.upload(&g.gs, 4);
      test::poison(dy);
      cuda::linear_w4a4(dx.get<__nv_bfloat16>(), m, d, dynamic, dgs.get<float>(), dy.get(), cuda::OutType::kBF16, scratch, ws, nullptr);
      cuda::check_cuda(cudaDeviceSynchronize(), "linear_w4a4");
      const auto y = test::from_device(dy, ref.size(), false);
      EXPECT_EQ(test::count_non_finite(y.data(), static_cast<int64_t>(y.size())), 0);
      for (float& v : ref) v = round_to_bf16(v);
      EXPECT_LE(test::rel_l2(y, ref), 2e-3) << "relative L2 error";
    }
}

}  // namespace
}  // namespace fp4moe
