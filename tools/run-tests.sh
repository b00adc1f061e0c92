#!/usr/bin/env bash
# Builds fp4moe and runs every test: the CPU tests everywhere, the GPU tests where a GPU is
# present (on a machine without one they report SKIPPED, and CTest lists them as not run).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "note: no GPU on this machine: tests labelled 'gpu' will report SKIPPED (not passed)"
fi
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 1800
