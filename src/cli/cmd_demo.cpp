// `fp4moe demo`: quantize one random DeepSeek-V4-Flash-shaped routed expert (gate|up
// 4096 -> 2x2048, down 2048 -> 4096) to NVFP4 and MXFP4, run it with the CPU reference linear
// on a few tokens, and print the error against the BF16 expert and the bytes each format takes.
//
// Gate and up are drawn with different magnitudes so the fused gate|up matrix carries two
// different NVFP4 global scales, as real checkpoints do.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "formats/codecs.h"
#include "formats/quantize.h"
#include "ops/cpu/linear_ref.h"

namespace fp4moe::cli {
namespace {

struct DemoOptions {
  int64_t hidden = 4096;
  int64_t inter = 2048;
  int64_t tokens = 4;
  uint64_t seed = 0;
  float swiglu_limit = 10.0f;
};

struct Expert {
  Matrix gate_up;  // [2I, H]
  Matrix down;     // [H, I]
};

std::vector<float> random_bf16(std::mt19937_64& rng, int64_t n, float stddev) {
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = round_to_bf16(d(rng));
  return v;
}

// Clamped SwiGLU of DeepSeek-V4: silu(min(g, L)) * clamp(u, -L, L), on the fused [g | u] rows.
std::vector<float> swiglu(const std::vector<float>& gu, int64_t tokens, int64_t inter, float limit) {
  std::vector<float> a(static_cast<size_t>(tokens * inter));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < inter; ++i) {
      const float g = std::min(gu[static_cast<size_t>(t * 2 * inter + i)], limit);
      const float u = std::clamp(gu[static_cast<size_t>(t * 2 * inter + inter + i)], -limit, limit);
      a[static_cast<size_t>(t * inter + i)] = g / (1.0f + std::exp(-g)) * u;
    }
  return a;
}

std::vector<float> run_expert(const Expert& e, const std::vector<float>& x, const DemoOptions& o) {
  std::vector<float> gu(static_cast<size_t>(o.tokens * 2 * o.inter));
  cpu::linear(x.data(), o.tokens, e.gate_up.view(), gu.data());
  std::vector<float> a = swiglu(gu, o.tokens, o.inter, o.swiglu_limit);
  for (float& v : a) v = round_to_bf16(v);  // activations travel in bf16 between the two GEMMs
  std::vector<float> y(static_cast<size_t>(o.tokens * o.hidden));
  cpu::linear(a.data(), o.tokens, e.down.view(), y.data());
  return y;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

int run_demo(const DemoOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t seed = o.seed ? o.seed : std::random_device{}();
  std::mt19937_64 rng(seed);
  std::printf("fp4moe demo: one DeepSeek-V4-Flash routed expert (hidden %lld, intermediate %lld), %lld tokens, seed %llu\n",
              (long long)o.hidden, (long long)o.inter, (long long)o.tokens, (unsigned long long)seed);

  // Gate and up with different spreads: their NVFP4 global scales differ.
  const std::vector<float> wg = random_bf16(rng, o.inter * o.hidden, 0.02f);
  const std::vector<float> wu = random_bf16(rng, o.inter * o.hidden, 0.05f);
  const std::vector<float> wd = random_bf16(rng, o.hidden * o.inter, 0.02f);
  const std::vector<float> x = random_bf16(rng, o.tokens * o.hidden, 1.0f);

  auto build = [&](auto quant) {
    Matrix g = quant(wg.data(), o.inter, o.hidden), u = quant(wu.data(), o.inter, o.hidden);
    const Matrix* parts[] = {&g, &u};
    return Expert{concat_rows(parts), quant(wd.data(), o.hidden, o.inter)};
  };
  const Expert bf16 = build([](const float* w, int64_t r, int64_t c) { return make_bf16_matrix(w, r, c); });
  const Expert nvfp4 = build([](const float* w, int64_t r, int64_t c) { return quantize_nvfp4_weight(w, r, c); });
  const Expert mxfp4 = build([](const float* w, int64_t r, int64_t c) { return quantize_mxfp4(w, r, c); });
  const Expert fp8 =
      build([](const float* w, int64_t r, int64_t c) { return quantize_fp8_block(w, r, c, ScaleKind::kUe8m0); });

  std::printf("NVFP4 gate|up global scales (weight_scale_2): gate %.6g, up %.6g (kept per part)\n",
              nvfp4.gate_up.ranges[0].global_scale, nvfp4.gate_up.ranges[1].global_scale);

  const std::vector<float> y_ref = run_expert(bf16, x, o);
  std::printf("\n%-26s %14s\n", "expert output vs BF16", "relative L2");
  std::printf("%-26s %14.3e\n", "NVFP4 W4A16", rel_l2(run_expert(nvfp4, x, o), y_ref));
  std::printf("%-26s %14.3e\n", "MXFP4 W4A16", rel_l2(run_expert(mxfp4, x, o), y_ref));
  std::printf("%-26s %14.3e\n", "FP8 128x128 (ue8m0)", rel_l2(run_expert(fp8, x, o), y_ref));

  // W4A4 emulation of the gate|up projection (dynamic activation global scale).
  std::vector<float> gu16(static_cast<size_t>(o.tokens * 2 * o.inter)), gu4(gu16.size());
  cpu::linear(x.data(), o.tokens, bf16.gate_up.view(), gu16.data());
  cpu::linear_w4a4(x.data(), o.tokens, nvfp4.gate_up.view(), act_global_scale_dynamic(x.data(), (int64_t)x.size()),
                   gu4.data());
  std::printf("%-26s %14.3e\n", "NVFP4 W4A4 gate|up only", rel_l2(gu4, gu16));

  std::printf("\n%-22s %14s %10s\n", "format (one expert)", "bytes", "vs BF16");
  const double base = double(bf16.gate_up.total_bytes() + bf16.down.total_bytes());
  for (const auto& [name, e] : {std::pair{"BF16", &bf16}, std::pair{"FP8 128x128 ue8m0", &fp8},
                                std::pair{"MXFP4", &mxfp4}, std::pair{"NVFP4", &nvfp4}}) {
    const double b = double(e->gate_up.total_bytes() + e->down.total_bytes());
    std::printf("%-22s %14.0f %9.2fx\n", name, b, base / b);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\ndone in %.2f s on the CPU reference backend\n", secs);
  return kExitOk;
}

}  // namespace

void register_demo(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<DemoOptions>();
  CLI::App* cmd = app.add_subcommand("demo", "Quantize a random DeepSeek-V4-Flash expert to NVFP4/MXFP4 and compare with BF16");
  cmd->add_option("--tokens", opts->tokens, "Tokens to run through the expert")->check(CLI::Range(1, 4096));
  cmd->add_option("--seed", opts->seed, "Random seed (0: a fresh one)");
  cmd->callback([opts, &exit_code] { exit_code = run_demo(*opts); });
}

}  // namespace fp4moe::cli
