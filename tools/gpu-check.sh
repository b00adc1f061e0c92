#!/usr/bin/env bash
# The GPU check, run on a machine with a Hopper GPU: build with all cores, run the GPU tests,
# run them again under compute-sanitizer (memcheck, racecheck), check DeepSeek-V4 parity with
# transformers, run the benchmark, and
# leave every log and table in one folder.
#
#   tools/gpu-check.sh [OUT_DIR]        (default: $OUT, else ./out/gpu-check)
#
# FP4MOE_SRC: the source tree to build (default: this checkout). To check exactly the
# committed tree from a checkout with work in progress: tools/gpu-snapshot.sh here, then
# FP4MOE_SRC=.snap there (.snap/COMMIT names the commit in the summary).
#
# Env: FP4MOE_BENCH_ARGS (extra benchmark flags, e.g. "--quick"), FP4MOE_SKIP_BENCH=1,
#      FP4MOE_SKIP_LINEAR_BENCH=1 (the MoE benchmark only), FP4MOE_SKIP_TESTS=1 (no ctest pass,
#      e.g. a second call on a warm machine that only adds the sanitizer passes to a build),
#      FP4MOE_SKIP_SANITIZER=1 (tests without the sanitizer passes, e.g. to split one check over two calls),
#      FP4MOE_SKIP_PARITY=1 (no DeepSeek-V4 parity run against transformers),
#      FP4MOE_SKIP_MAIN=1 (not the main job's GPU part, tools/main-gpu.sh),
#      FP4MOE_DEPS (a prefix holding gtest/nlohmann-json/CLI11 when the system lacks them;
#      default ./.deps/usr if present).
# Output files: summary.txt, build.log, tests.log, sanitizer.log, parity_v4.txt, parity_v4.json, bench.md, bench.json,
#   bench_moe.md, bench_moe.json, bench_streams.md, sass.txt, main_gpu.txt
# Exit status: 0 when the build, the tests, both sanitizer passes and the parity run are clean
# (a parity run that cannot run, for want of the CLI or of torch, fails the check unless
# FP4MOE_SKIP_PARITY=1 asked to skip it).
set -u -o pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-$PWD/out/gpu-check}}"
mkdir -p "$out"
src="${FP4MOE_SRC:-.}"
build=build-gpu
summary="$out/summary.txt"
: >"$summary"
status=0
t_start=$(date +%s)
# Each summary line ends with the seconds since the start (what a device call's budget needs to know).
note() { echo "$* (t+$(($(date +%s) - t_start)) s)" | tee -a "$summary"; }

commit=$(cat "$src/COMMIT" 2>/dev/null || git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
note "gpu-check: $(date -u +%Y-%m-%dT%H:%M:%SZ) source $src commit $commit"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | tee -a "$summary"

prefix=()
deps="${FP4MOE_DEPS:-$PWD/.deps/usr}"
[ -d "$deps" ] && prefix=(-DCMAKE_PREFIX_PATH="$deps")

# ---- build -------------------------------------------------------------------------------
{
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFP4MOE_PTXAS_VERBOSE=ON "${prefix[@]}" &&
    cmake --build "$build" -j "$(nproc)" -- -k 0
} >"$out/build.log" 2>&1
if [ $? -ne 0 ]; then
  note "build: FAILED (see build.log)"
  status=1
else
  note "build: ok"
fi
grep -E "spill (stores|loads)" "$out/build.log" | grep -v " 0 bytes spill stores, 0 bytes spill loads" | sort -u | sed 's/^/spills: /' | tee -a "$summary"

# ---- SASS: the kernels' MMA instructions ---------------------------------------------------
lib="$build/src/ops/cuda/libfp4moe_cuda.a"
if [ -f "$lib" ]; then
  cuobjdump -sass "$lib" >"$out/sass.txt" 2>&1
  note "sass: HMMA $(grep -c HMMA "$out/sass.txt") HGMMA $(grep -c HGMMA "$out/sass.txt") LDL/STL $(grep -cE 'LDL|STL' "$out/sass.txt")"
fi

# ---- GPU tests -------------------------------------------------------------------------------
# GPU tests, and the oracles that need the GPU machine's Python (PyTorch running ModelOpt's
# arithmetic on CUDA).
if [ "${FP4MOE_SKIP_TESTS:-0}" = 1 ]; then
  note "tests: skipped (FP4MOE_SKIP_TESTS=1)"
else
  if (cd "$build" && ctest -L 'gpu|oracle' --output-on-failure --timeout 900) >"$out/tests.log" 2>&1; then
    note "gpu tests: ok: $(grep -E 'tests passed|tests failed' "$out/tests.log" | tail -1)"
  else
    note "gpu tests: FAILED: $(grep -E 'tests passed|tests failed' "$out/tests.log" | tail -1)"
    status=1
  fi
  # CPU tests too (the fuzz run is CI's: it needs clang, which this image may lack).
  if (cd "$build" && ctest -L cpu -LE fuzz --timeout 600) >>"$out/tests.log" 2>&1; then
    note "cpu tests: ok: $(grep -E 'tests passed|tests failed' "$out/tests.log" | tail -1)"
  else
    note "cpu tests: FAILED: $(grep -E 'tests passed|tests failed' "$out/tests.log" | tail -1)"
    status=1
  fi
fi

# ---- compute-sanitizer --------------------------------------------------------------------------
# The full-size DeepSeek shapes (and *Large* tests) run only without the sanitizer (its slowdown is ~100x); every
# other GPU test runs under both tools.
: >"$out/sanitizer.log"
san_fail=0
tools=(memcheck racecheck)
[ "${FP4MOE_SKIP_SANITIZER:-0}" = 1 ] && tools=() && note "compute-sanitizer: skipped (FP4MOE_SKIP_SANITIZER=1)"
for tool in "${tools[@]}"; do
  for t in "$build"/tests/gpu_*; do
    [ -x "$t" ] || continue
    echo "=== $tool $(basename "$t")" >>"$out/sanitizer.log"
    timeout 900 compute-sanitizer --tool "$tool" --error-exitcode 99 "$t" --gtest_filter='-*DeepSeek*:*Large*' \
      >>"$out/sanitizer.log" 2>&1
    rc=$?
    echo "=== exit $rc" >>"$out/sanitizer.log"
    [ $rc -ne 0 ] && san_fail=1
  done
done
if [ ${#tools[@]} -eq 0 ]; then
  :
elif [ $san_fail -eq 0 ]; then
  note "compute-sanitizer: memcheck + racecheck clean ($(grep -c '^=== memcheck' "$out/sanitizer.log") binaries each)"
else
  note "compute-sanitizer: FINDINGS or failures (see sanitizer.log): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer.log" | sort | uniq -c | tr '\n' ';')"
  status=1
fi

# ---- DeepSeek-V4 parity with transformers ------------------------------------------------------
# The model runner (CPU backend) against transformers' DeepseekV4ForCausalLM, when this
# machine's Python has torch and transformers.
if [ "${FP4MOE_SKIP_PARITY:-0}" != 1 ] && [ -x "$build/fp4moe" ] && python3 -c "import torch, transformers" 2>/dev/null; then
  if python3 "$src/tools/parity_v4.py" --fp4moe "$build/fp4moe" --out "$out/parity_v4.json" >"$out/parity_v4.txt" 2>&1; then
    note "parity: ok ($(grep -c -- '-> PASS' "$out/parity_v4.txt") comparisons pass)"
  else
    note "parity: FAILED (see parity_v4.txt): $(grep -c -- '-> FAIL' "$out/parity_v4.txt") comparisons fail"
    status=1
  fi
elif [ "${FP4MOE_SKIP_PARITY:-0}" = 1 ]; then
  note "parity: skipped (FP4MOE_SKIP_PARITY=1)"
else
  # Not asked to skip, yet it cannot run: the check is incomplete, so it does not pass.
  note "parity: NOT RUN ($([ -x "$build/fp4moe" ] && echo "no torch/transformers in python3" || echo "no fp4moe CLI in the build")); set FP4MOE_SKIP_PARITY=1 to skip it on purpose"
  status=1
fi

# ---- benchmark ---------------------------------------------------------------------------------
if [ "${FP4MOE_SKIP_BENCH:-0}" != 1 ] && [ "${FP4MOE_SKIP_LINEAR_BENCH:-0}" != 1 ] && [ -x "$build/bench/bench_linear" ]; then
  # shellcheck disable=SC2086
  if "$build/bench/bench_linear" --json "$out/bench.json" ${FP4MOE_BENCH_ARGS:-} >"$out/bench.md" 2>>"$out/build.log"; then
    note "bench: ok ($(grep -c '^| V4' "$out/bench.md") rows)"
    head -1 "$out/bench.md" | tee -a "$summary"
  else
    note "bench: FAILED"
    status=1
  fi
fi
if [ "${FP4MOE_SKIP_BENCH:-0}" != 1 ] && [ -x "$build/bench/bench_moe" ]; then
  if "$build/bench/bench_moe" --json "$out/bench_moe.json" >"$out/bench_moe.md" 2>>"$out/build.log"; then
    note "bench_moe: ok"
  else
    note "bench_moe: FAILED"
    status=1
  fi
fi
# The read pattern of the one-token kernel against one sweep of the same bytes (a few seconds).
if [ "${FP4MOE_SKIP_BENCH:-0}" != 1 ] && [ -x "$build/bench/bench_streams" ]; then
  if timeout 120 "$build/bench/bench_streams" >"$out/bench_streams.md" 2>>"$out/build.log"; then
    note "bench_streams: ok ($(head -1 "$out/bench_streams.md"))"
  else
    note "bench_streams: FAILED"
    status=1
  fi
fi
# ---- the main job's GPU part (what tools/run-main.sh prints on a GPU machine) ------------------
if [ "${FP4MOE_SKIP_MAIN:-0}" != 1 ] && [ -x "$build/bench/bench_moe" ]; then
  if bash "$src/tools/main-gpu.sh" "$build" >"$out/main_gpu.txt" 2>&1; then
    note "main job (GPU part): ok (main_gpu.txt)"
  else
    note "main job (GPU part): FAILED (main_gpu.txt)"
    status=1
  fi
fi
note "gpu-check: exit $status"
exit $status
