#!/usr/bin/env bash
# Builds fp4moe and runs every test: the CPU tests everywhere, the GPU tests where a GPU is
# present (on a machine without one they report SKIPPED, and CTest lists them as not run).
# Then builds the CPU backend once more with AddressSanitizer and UndefinedBehaviorSanitizer
# (build-asan/) and runs the CPU tests in it: an out-of-bounds access, a leak or undefined
# behaviour that the plain build gets away with fails the test that hits it.
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
echo "== the CPU tests again under AddressSanitizer and UndefinedBehaviorSanitizer (build-asan/)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFP4MOE_SANITIZE=ON
cmake --build build-asan -j"$jobs"
# The fuzz test is left out here: it builds its own ASan + UBSan + libFuzzer target, and ran above.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 1800 -L cpu -LE fuzz
