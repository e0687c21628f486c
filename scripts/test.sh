#!/usr/bin/env bash
# Set everything up (see setup.sh) and run the whole test suite, the embedded model included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
