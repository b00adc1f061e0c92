#!/usr/bin/env bash
# Builds fp4moe and runs its main job: a tiny DeepSeek-V4 checkpoint is made (BF16, once),
# quantized to NVFP4 in ModelOpt's layout, checked by the doctor, and run: greedy generation
# with the full V4 forward on the CPU reference backend. On a machine with a GPU (and the
# CUDA backend built), the FP4 linear kernels then run on the DeepSeek-V4 decode shapes
# against cuBLAS BF16 (a short benchmark).
# Extra arguments go to `fp4moe run` (e.g. --max-new-tokens 64 --logits-out out/logits.safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
gpu=0
nvidia-smi -L >/dev/null 2>&1 && gpu=1
targets=(fp4moe)
[ "$gpu" = 1 ] && grep -q "FP4MOE_HAVE_CUDA:INTERNAL=ON" build/CMakeCache.txt 2>/dev/null && targets+=(bench_linear bench_moe)
cmake --build build -j"$(nproc)" --target "${targets[@]}"

mkdir -p out
if [ ! -f out/tiny-v4/config.json ]; then
  ./build/fp4moe make-tiny out/tiny-v4
fi
rm -rf out/tiny-v4-nvfp4
./build/fp4moe quantize out/tiny-v4 out/tiny-v4-nvfp4 --scheme nvfp4
if ./build/fp4moe doctor out/tiny-v4-nvfp4 >out/doctor.txt; then
  echo "doctor: $(tail -n 1 out/doctor.txt) (full report: out/doctor.txt)"
else
  cat out/doctor.txt
  exit 1
fi
./build/fp4moe run --model out/tiny-v4-nvfp4 --prompt-ids "1,2,3,4,5" --max-new-tokens 32 "$@"

if [ "$gpu" = 1 ] && [ -x build/bench/bench_linear ]; then
  echo
  tools/main-gpu.sh build
elif [ "$gpu" = 1 ]; then
  echo
  echo "GPU part skipped: a GPU is present but the CUDA backend was not built (no nvcc found by CMake)"
fi
