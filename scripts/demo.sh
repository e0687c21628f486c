#!/usr/bin/env bash
# Set everything up (see setup.sh) and solve the bundled example task with EG-CFG on the embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/egcfg solve examples/opposite_signs.json "$@"
