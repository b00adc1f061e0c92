#!/usr/bin/env bash
# Installs what fp4moe needs to build and test, idempotently: Debian packages (compiler,
# CMake, Ninja, nlohmann-json, CLI11, GoogleTest) and, for the codec cross-check, the Python
# packages numpy and ml_dtypes. Does nothing when everything is already there.
set -euo pipefail

pkgs=(build-essential cmake ninja-build nlohmann-json3-dev libcli11-dev libgtest-dev python3 python3-pip clang-14 libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Optional: an independent implementation of e4m3/e2m1 for the codec cross-check test. The
# test reports itself skipped (with the reason) when these cannot be installed.
if ! python3 -c "import numpy, ml_dtypes, safetensors" 2>/dev/null; then
  echo "setup: installing numpy, ml_dtypes and safetensors (pip)"
  python3 -m pip install -q numpy ml_dtypes safetensors 2>/dev/null \
    || python3 -m pip install -q --break-system-packages numpy ml_dtypes safetensors 2>/dev/null \
    || echo "setup: could not pip-install numpy/ml_dtypes/safetensors; the tests that need them will be skipped"
fi
