#!/usr/bin/env bash
# On the lent GPU machine, at the end of a call: every run folder under /root/runs (or those named)
# with its SQLite WAL checkpointed, packed into $OUT/runs.tgz.NN (15 MiB pieces: the device tool
# returns at most 8 files of 16 MiB). Here: cat runs.tgz.* | tar xz -C DIR.
set -uo pipefail
cd /root/runs 2>/dev/null || { echo "gpu-collect: no /root/runs" >&2; exit 2; }
names=("$@"); [ ${#names[@]} -gt 0 ] || mapfile -t names < <(ls -A)
[ ${#names[@]} -gt 0 ] || { echo "gpu-collect: /root/runs is empty" >&2; exit 2; }
for d in "${names[@]}"; do
  [ -f "$d/results.sqlite" ] || continue
  # a busy checkpoint (a run still writing) would leave rows in the WAL: then the WAL goes too
  busy=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()[0])" "$d/results.sqlite")
  [ "$busy" = 0 ] || echo "gpu-collect: $d is still being written; its WAL is packed as it is" >&2
done
tar czf - --exclude='*-shm' "${names[@]}" | split -b 15M -d - "$OUT/runs.tgz." || { echo "gpu-collect: packing failed" >&2; exit 2; }
n=$(ls "$OUT"/runs.tgz.* | wc -l)
[ "$n" -le 8 ] || echo "gpu-collect: $n pieces; the device tool returns 8: name fewer runs" >&2
ls -l "$OUT"
