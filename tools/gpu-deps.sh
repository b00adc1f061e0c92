#!/usr/bin/env bash
# Prepares .deps/usr, the build dependencies that the GPU machine's image lacks (nlohmann-json,
# CLI11, GoogleTest/GoogleMock: headers, CMake files and static libraries), unpacked from
# Debian packages. That machine cannot install packages itself, so run this where apt works,
# then carry .deps with the device call; tools/gpu-check.sh finds it (FP4MOE_DEPS defaults to
# ./.deps/usr). A typical device call, from this checkout:
#   tools/gpu-deps.sh; rm -rf .snap; mkdir .snap; git archive HEAD | tar -x -C .snap
#   run: FP4MOE_SRC=.snap tools/gpu-check.sh $OUT    carry: [".snap", ".deps"]
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 777 "$tmp"  # apt downloads as the _apt user
(cd "$tmp" && apt-get download "${pkgs[@]}" >/dev/null) || {
  echo "gpu-deps: apt-get download failed (run apt-get update first?)" >&2
  exit 1
}
rm -rf .deps
mkdir -p .deps
for f in "$tmp"/*.deb; do dpkg -x "$f" .deps; done
rm -rf .deps/usr/share/doc
echo "gpu-deps: unpacked ${pkgs[*]} into .deps ($(du -sh .deps | cut -f1))"
