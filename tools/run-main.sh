#!/usr/bin/env bash
# Builds fp4moe and runs its main job: `fp4moe demo` (a DeepSeek-V4-Flash expert quantized
# to NVFP4 and MXFP4, run by the reference linear, compared with BF16).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DFP4MOE_BUILD_TESTS=OFF
cmake --build build -j"$(nproc)" --target fp4moe
./build/fp4moe demo "$@"
