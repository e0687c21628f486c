#!/usr/bin/env bash
# On the lent GPU machine, at the end of a call: every run folder under /root/runs (or those named)
# with its SQLite WAL checkpointed, packed into $OUT/runs.tgz.NN (15 MiB pieces: the device tool
# returns at most 8 files of 16 MiB). Here: cat runs.tgz.* | tar xz -C DIR.
set -uo pipefail
cd /root/runs 2>/dev/null || { echo "gpu-collect: no /root/runs"; exit 0; }
names=("$@"); [ ${#names[@]} -gt 0 ] || names=(*)
for d in "${names[@]}"; do
  [ -f "$d/results.sqlite" ] && python3 -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)')" "$d/results.sqlite"
done
tar czf - --exclude='*-wal' --exclude='*-shm' "${names[@]}" | split -b 15M -d - "$OUT/runs.tgz."
ls -l "$OUT"
