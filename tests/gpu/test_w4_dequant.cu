// The kernels' dequantization (repacked layout, scale preprocessing, the bf16 bit trick and
// bf16 multiply) against the CPU's dequantize_row_unscaled: BITWISE equal, for NVFP4 and
// MXFP4, random codes with scales over the whole range the layout accepts (e4m3
// subnormals and 448 included), odd shapes (rows not a multiple of 16, k not of 64).
#include <gtest/gtest.h>

#include <random>

#include "gpu_test_util.h"
#include "ops/cpu/linear_ref.h"
#include "ops/cuda/linear.h"
#include "util/test_util.h"

namespace fp4moe {
namespace {

Matrix random_codes_matrix(std::mt19937_64& rng, MatrixFormat f, int64_t rows, int64_t cols) {
  Matrix m;
  m.format = f;
  m.scale_kind = f == MatrixFormat::kNVFP4 ? ScaleKind::kE4m3 : ScaleKind::kUe8m0;
  m.rows = rows;
  m.cols = cols;
  m.data.resize(static_cast<size_t>(rows * cols / 2));
  for (auto& b : m.data) b = static_cast<uint8_t>(rng());
  const int64_t sc = matrix_scale_cols(f, cols);
  m.scales.resize(static_cast<size_t>(rows * sc));
  std::uniform_int_distribution<int> nv(0, 0x7E), mx(cuda::kMxScaleMin, cuda::kMxScaleMax);
  for (auto& s : m.scales) s = static_cast<uint8_t>(f == MatrixFormat::kNVFP4 ? nv(rng) : mx(rng));
  m.ranges = {OutputRange{0, 1.0f}};
  return m;
}

void check_bitwise(const Matrix& m) {
  const cuda::W4Layout L = cuda::repack_w4(m.view());
  const cuda::DeviceW4Matrix d = cuda::DeviceW4Matrix::upload(L);
  const Matrix canon = cuda::unrepack_w4(L);  // zero-scale blocks have zero codes
  cuda::DeviceBuffer out(static_cast<size_t>(m.rows * m.cols * 4));
  test::poison(out);
  cuda::dequantize_w4(d, out.get(), true, false, nullptr);
  cuda::check_cuda(cudaDeviceSynchronize(), "dequantize_w4");
  const auto got = test::download_vec<float>(out, static_cast<size_t>(m.rows * m.cols));
  std::vector<float> want(static_cast<size_t>(m.cols));
  int64_t bad = 0;
  for (int64_t n = 0; n < m.rows; ++n) {
    cpu::dequantize_row_unscaled(canon.view(), n, want.data());
    for (int64_t k = 0; k < m.cols; ++k) {
      const float g = got[static_cast<size_t>(n * m.cols + k)];
      if (f32_bits(g) != f32_bits(want[static_cast<size_t>(k)]) && bad++ < 5)
        ADD_FAILURE() << "row " << n << " k " << k << ": gpu " << g << " cpu " << want[static_cast<size_t>(k)];
    }
  }
  EXPECT_EQ(bad, 0) << "mismatching elements (bitwise) of " << m.rows * m.cols;
}

TEST(GpuW4Dequant, Nvfp4BitwiseOverTheWholeScaleRange) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  check_bitwise(random_codes_matrix(r.rng, MatrixFormat::kNVFP4, 37, 592));
  check_bitwise(random_codes_matrix(r.rng, MatrixFormat::kNVFP4, 256, 4096));
}

TEST(GpuW4Dequant, Mxfp4BitwiseOverTheAcceptedScaleRange) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng r;
  check_bitwise(random_codes_matrix(r.rng, MatrixFormat::kMXFP4, 37, 608));
  check_bitwise(random_codes_matrix(r.rng, MatrixFormat::kMXFP4, 256, 2048));
}

}  // namespace
}  // namespace fp4moe
