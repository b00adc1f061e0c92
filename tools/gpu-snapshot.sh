#!/usr/bin/env bash
# Exports the whole tree at HEAD into .snap/, for tools/gpu-check.sh to build on the GPU machine
# as FP4MOE_SRC=.snap: the check then covers exactly the commit, unaffected by work in progress
# elsewhere in the checkout. The whole tree, not only the CUDA backend: without the CLI the
# check's DeepSeek-V4 parity run and the main job's GPU part would be skipped (the full build
# takes ~30 s on the GPU machine's 16 cores). .snap/ must be ignored (.git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .snap
mkdir .snap
git archive HEAD | tar -x -C .snap
git rev-parse --short HEAD >.snap/COMMIT
echo "snapshot of $(cat .snap/COMMIT) in .snap ($(du -sh .snap | cut -f1))"
