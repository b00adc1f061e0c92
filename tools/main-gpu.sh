#!/usr/bin/env bash
# The main job's GPU part (tools/run-main.sh runs it when there is a GPU; tools/gpu-check.sh runs
# it too, so that it is checked on the GPU machine): the FP4 linear kernels on DeepSeek-V4's
# decode shapes against cuBLAS BF16, then one DeepSeek-V4-Flash MoE layer (256 NVFP4 experts,
# top-6 and a shared expert; routing, dispatch, grouped FP4 GEMMs, combine) against cuBLAS BF16
# grouped GEMM on the dequantized experts and against the FP4 weight-read floor.
#
#   tools/main-gpu.sh [BUILD_DIR]       (default: build; needs bench/bench_linear and bench/bench_moe)
set -euo pipefail
build="${1:-build}"
# The kernels are built for sm_90a only: on another GPU say so and leave the CPU results standing.
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 || true)
if [ -n "$cap" ] && [ "${cap%%.*}" != 9 ]; then
  echo "GPU part skipped: the kernels need an sm_90 (Hopper) GPU; $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1) is compute capability $cap"
  exit 0
fi
for b in bench_linear bench_moe; do
  [ -x "$build/bench/$b" ] || { echo "main-gpu: $build/bench/$b is not built" >&2; exit 2; }
done
echo "GPU: FP4 linear kernels on DeepSeek-V4 decode shapes (1 and 16 tokens) against cuBLAS BF16"
"$build/bench/bench_linear" --quick --m 1,16
echo
echo "GPU: one DeepSeek-V4-Flash MoE layer (NVFP4 experts) at 1, 8, 64 and 4096 tokens against cuBLAS BF16 grouped GEMM and the FP4 weight-read floor"
"$build/bench/bench_moe" --models flash --t 1,8,64,4096
