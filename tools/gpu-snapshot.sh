#!/usr/bin/env bash
# Exports the committed CUDA backend and what it builds on (top CMake, formats, ops, their
# tests, bench, tools) at HEAD into .snap/, for tools/gpu-check.sh to build on the GPU
# machine as FP4MOE_SRC=.snap: the check then covers exactly the commit, unaffected by
# work in progress elsewhere in the tree. .snap/ must be ignored (.git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .snap
mkdir .snap
git archive HEAD CMakeLists.txt src/CMakeLists.txt src/formats src/ops tests/CMakeLists.txt tests/util tests/gpu \
  tests/tools tests/test_w4a16_layout.cpp tests/test_codecs.cpp tests/test_block_quant.cpp tests/test_linear_ref.cpp tests/test_moe_ref.cpp \
  bench tools | tar -x -C .snap
git rev-parse --short HEAD >.snap/COMMIT
echo "snapshot of $(cat .snap/COMMIT) in .snap"
