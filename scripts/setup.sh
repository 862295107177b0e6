#!/usr/bin/env bash
# Sets up cellstate on Debian 12: installs every package it needs with apt-get
# (only what is missing, so running it again is cheap), then configures and
# builds Release into build/.
#
#   scripts/setup.sh             install what is missing, then build
#   scripts/setup.sh --no-build  install only
#   scripts/setup.sh --python    also install the Python peers used by bench/
#                                and scripts/plot_training.py (python3-torch,
#                                python3-matplotlib)
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
python=0
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --python) python=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake pkg-config ccache git
  python3  # scripts/readme_examples.py (the README's examples, a test)
  libtorch-dev
  libdnnl-dev  # oneDNN's headers: the custom kernels' float32 products (nn/gemm.h)
  libgloo-dev  # the Gloo headers c10d's process group needs (dist/: data-parallel training)
  libopenblas0-openmp  # without it LibTorch falls back to reference BLAS (~16x slower)
  libsentencepiece-dev sentencepiece
  libboost-program-options-dev libgtest-dev nlohmann-json3-dev zlib1g-dev
  libcpp-httplib-dev curl wrk  # cellstate-serve, its tests (curl) and its load benchmark (wrk)
  clang-14 libclang-rt-14-dev  # libFuzzer and the sanitizers: scripts/fuzz.sh (run by scripts/test.sh)
)
if [ "$python" = 1 ]; then packages+=(python3-torch python3-matplotlib); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# LibTorch must load OpenBLAS (OpenMP build), not the reference BLAS.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$blas" in
  *openblas-openmp*) ;;
  *) echo "setup.sh: warning: libblas.so.3 is $blas, not OpenBLAS (OpenMP); run" \
          "'update-alternatives --config libblas.so.3-x86_64-linux-gnu'" >&2 ;;
esac

[ "$build" = 1 ] || exit 0
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
# Paths below the checkout are hashed relative to it, so a fresh clone reuses the cache.
export CCACHE_BASEDIR="$PWD"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2
