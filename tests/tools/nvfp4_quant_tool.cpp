// Quantizes a [rows, cols] float32 matrix (raw little-endian file) to NVFP4 with
// quantize_nvfp4_weight and writes packed codes, e4m3 block scales and weight_scale_2, in that
// order, to OUT. Used by oracle_modelopt_torch.py to compare bytes with PyTorch.
// Usage: nvfp4_quant_tool IN.f32 ROWS COLS cuda|ieee OUT.bin
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

#include "formats/quantize.h"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: nvfp4_quant_tool IN.f32 ROWS COLS cuda|ieee OUT.bin\n");
    return 2;
  }
  const long long rows = std::atoll(argv[2]), cols = std::atoll(argv[3]);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  std::FILE* in = std::fopen(argv[1], "rb");
  if (!in || std::fread(w.data(), 4, w.size(), in) != w.size()) {
    std::fprintf(stderr, "nvfp4_quant_tool: cannot read %lld floats from %s\n", rows * cols, argv[1]);
    return 2;
  }
  std::fclose(in);
  fp4moe::Nvfp4WeightOptions opt;
  opt.rounding = std::strcmp(argv[4], "ieee") == 0 ? fp4moe::GlobalScaleRounding::kIeeeDivision
                                                   : fp4moe::GlobalScaleRounding::kCudaReciprocal;
  try {
    const fp4moe::Matrix m = fp4moe::quantize_nvfp4_weight(w.data(), rows, cols, opt);
    std::FILE* out = std::fopen(argv[5], "wb");
    if (!out) return 2;
    std::fwrite(m.data.data(), 1, m.data.size(), out);
    std::fwrite(m.scales.data(), 1, m.scales.size(), out);
    std::fwrite(&m.ranges[0].global_scale, 4, 1, out);
    return std::fclose(out) == 0 ? 0 : 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nvfp4_quant_tool: %s\n", e.what());
    return 2;
  }
}
