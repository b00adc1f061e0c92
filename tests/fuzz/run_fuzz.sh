#!/usr/bin/env bash
# Builds the checkpoint-reader fuzz target with clang (ASan + UBSan + libFuzzer) in its own folder and
# fuzzes the reader for a bounded time, starting from the seed corpus.
#   run_fuzz.sh SOURCE_ROOT BUILD_DIR SECONDS
# Exit 0: no crash; 1: a crash (the reproducer is in BUILD_DIR, printed below); 77: no clang
# with libFuzzer here (CTest reports the test skipped, with this reason).
set -uo pipefail
root=$1 build=$2 secs=${3:-60}
cxx=$(command -v clang++ || command -v clang++-14 || true)
if [ -z "$cxx" ]; then
  echo "SKIPPED: clang++ not found (tools/setup.sh installs clang and libclang-rt-dev)"
  exit 77
fi
cc=$(command -v clang || command -v clang-14 || echo clang)
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
     "$cxx" -x c++ -fsanitize=fuzzer,address,undefined - -o "/tmp/fp4moe_fuzz_probe_$$" 2>/dev/null; then
  echo "SKIPPED: $cxx cannot link -fsanitize=fuzzer,address,undefined (install libclang-rt-dev)"
  exit 77
fi
rm -f "/tmp/fp4moe_fuzz_probe_$$"
cmake -S "$root/tests/fuzz" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j2 || exit 1
corpus="$build/corpus"
mkdir -p "$corpus"
cp -n "$root"/tests/fuzz/corpus/* "$corpus"/ 2>/dev/null || true
cd "$build" || exit 1
echo "fuzzing the safetensors reader for ${secs}s"
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ./fuzz_safetensors "$corpus" "$root/tests/fuzz/corpus" -max_total_time="$secs" -max_len=4096 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -dict="$root/tests/fuzz/safetensors.dict"
rc=$?
if [ $rc -ne 0 ]; then
  echo "fuzzer found a failure (exit $rc); reproducers:"
  ls -1 "$build"/crash-* "$build"/leak-* "$build"/timeout-* "$build"/oom-* 2>/dev/null
  exit 1
fi
