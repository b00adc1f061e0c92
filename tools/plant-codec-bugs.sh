#!/usr/bin/env bash
# Plants one-bit bugs in the codecs and block rules, one at a time, and checks that the CPU
# tests catch every one. Works on a throw-away copy of the tree; prints one line per bug.
# Usage: tools/plant-codec-bugs.sh [build-dir-for-the-copy]
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$src" archive HEAD | tar -x -C "$work"
cmake -S "$work" -B "$work/build" -G Ninja -DFP4MOE_ENABLE_CUDA=OFF >/dev/null

# file | original | planted
bugs=(
  "src/formats/codecs.h|ab + 0x7FFFFu + ((ab >> 20) & 1u)|ab + 0x7FFFFu"
  "src/formats/codecs.h|f32_from_bits(ab) * 512.0f|f32_from_bits(ab) * 256.0f"
  "src/formats/codecs.h|((e - 7u + 127u) << 23)|((e - 6u + 127u) << 23)"
  "src/formats/codecs.h|if (ab >= 0x43E00000u)|if (ab >= 0x43D00000u)"
  "src/formats/codecs.h|if (a <= 0.25f) c = 0;|if (a < 0.25f) c = 0;"
  "src/formats/codecs.h|else if (a <= 5.0f) c = 6;|else if (a < 5.0f) c = 6;"
  "src/formats/codecs.h|f32_from_bits((125u + (c >> 1)) << 23)|f32_from_bits((124u + (c >> 1)) << 23)"
  "src/formats/codecs.h|((odd & 0xFu) << 4)|((odd & 0xFu) << 3)"
  "src/formats/codecs.h|if (mant != 0) e += 1;|if (mant > 1) e += 1;"
  "src/formats/codecs.h|(u + 0x7FFFu + ((u >> 16) & 1u)) >> 16|(u + 0x8000u) >> 16"
  "src/formats/codecs.h|if (code == 0) return f32_from_bits(0x00400000u);|if (code == 0) return f32_from_bits(0x00200000u);"
  "src/formats/blocks.h|(gs * amax) / 6.0f|gs * (amax / 6.0f)"
  "src/formats/blocks.h|if (s == 0.0f) s = 1.0f;|if (s == 0.0f) s = 0.5f;"
  "src/formats/blocks.h|(m % 32) * 16 + ((m / 32) % 4) * 4|(m % 32) * 16 + ((m / 32) % 4) * 2"
  "src/formats/blocks.h|: f32_from_bits((254u - scale) << 23)|: f32_from_bits((253u - scale) << 23)"
)
caught=0
for b in "${bugs[@]}"; do
  IFS='|' read -r file orig planted <<<"$b"
  cp "$work/$file" "$work/$file.orig"
  python3 -c 'import sys; p, a, b = sys.argv[1:]; s = open(p).read(); open(p, "w").write(s.replace(a, b, 1))' \
    "$work/$file" "$orig" "$planted"
  if cmp -s "$work/$file" "$work/$file.orig"; then
    echo "NOT PLANTED (pattern not found): $file: $orig"
  elif ninja -C "$work/build" >/dev/null 2>&1 && ctest --test-dir "$work/build" -L cpu -j2 >/dev/null 2>&1; then
    echo "MISSED: $file: '$orig' -> '$planted'"
  else
    echo "caught: $file: '$orig' -> '$planted'"
    caught=$((caught + 1))
  fi
  mv "$work/$file.orig" "$work/$file"
done
echo "$caught of ${#bugs[@]} planted bugs caught"
[ "$caught" -eq "${#bugs[@]}" ]
