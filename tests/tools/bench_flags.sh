#!/usr/bin/env bash
# The benchmarks' command-line errors: every malformed or out-of-range number, an unknown model
# and an unknown flag end in one line on stderr that names the flag, and exit 2, before any GPU
# work (so this runs on machines without one). Usage: bench_flags.sh BENCH_MOE BENCH_LINEAR BENCH_STREAMS
set -u
moe=$1 linear=$2 streams=$3
fails=0
expect() {  # expect BINARY TEXT-ON-STDERR ARGS...
  local bin=$1 want=$2
  shift 2
  local err rc
  err=$("$bin" "$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" != 2 ] || ! grep -qF -- "$want" <<<"$err" || [ "$(wc -l <<<"$err")" -gt 2 ]; then
    echo "FAIL: $(basename "$bin") $* -> rc $rc, stderr: $err (wanted rc 2 and '$want')"
    fails=$((fails + 1))
  else
    echo "ok: $(basename "$bin") $* -> $err"
  fi
}
expect "$moe" "--t takes an integer in 1..1048576, got 'x'" --t 1,x
expect "$moe" "--t takes an integer in 1..1048576, got '0'" --t 0
expect "$moe" "--t takes an integer in 1..1048576, got ''" --t 8,
expect "$moe" "--t takes an integer in 1..1048576, got '99999999999999999999'" --t 99999999999999999999
expect "$moe" "--sustain takes a number in 0..60000, got 'abc'" --sustain abc
expect "$moe" "--sustain takes a number in 0..60000, got '-1'" --sustain -1
expect "$moe" "--sustain takes a number in 0..60000, got 'nan'" --sustain nan
expect "$moe" "--mtiles takes 1, 2, 4, 8, 12 or 16, got '3'" --mtiles 3
expect "$moe" "--mtiles takes an integer in 1..16, got '8x'" --mtiles 8x
expect "$moe" "--stream-tokens takes an integer in 1..8, got '9'" --stream-tokens 9
expect "$moe" "--stream-warps takes an integer in 1..8, got '0'" --stream-warps 0
expect "$moe" "--models takes a comma-separated list of flash and pro, got 'flash,ultra'" --models flash,ultra
expect "$moe" "usage: bench_moe" --no-such-flag
expect "$linear" "--m takes an integer in 1..1048576, got '4k'" --m 1,4k
expect "$linear" "usage: bench_linear" --no-such-flag
expect "$streams" "--depth takes 1, 2, 4 or 8, got '3'" --depth 2,3
expect "$streams" "--mb takes an integer in 1..4096, got '0'" --mb 0
expect "$streams" "--streams takes an integer in 1..1048576, got 'x'" --streams 132,x
expect "$streams" "--stages takes 2, 3, 4 or 6, got '5'" --stages 2,5
expect "$streams" "--stages takes an integer in 2..6, got '7'" --stages 7
expect "$streams" "--cta-warps takes an integer in 1..32, got '0'" --cta-warps 0
expect "$streams" "--stage-ktiles takes an integer in 1..16, got '17'" --stage-ktiles 17
expect "$streams" "--ctas takes an integer in 1..65536, got 'x'" --ctas x
expect "$streams" "usage: bench_streams" --no-such-flag
expect "$streams" "usage: bench_streams" --mb
[ "$fails" = 0 ] || { echo "$fails case(s) failed"; exit 1; }
echo "all cases passed"
