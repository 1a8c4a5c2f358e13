#!/usr/bin/env bash
# What a big PDQ bank costs a process that loads it: import time, load time (built from the
# bank, then from the matcher snapshot the first load wrote) and resident memory per entry,
# and the first 1,000 queries after loading, with `firebreak lists import` and
# `firebreak match pdq --stats` on a CSV of N random hashes (ids like `e123`, two labels,
# the shape of a shared hash list).
#
# Environment:
#   N=5000000     entries (N=1000000 for a quick run)
#   SEED=11       generator seed
#   BIN=...       the firebreak binary (default: cargo build --release, then target/release)
#   DATA=...      scratch dir (default $CARGO_TARGET_DIR/bench-data/bank-$N)
#
# Prints one JSON line per step and a summary. The per-entry figure is the loaded process's
# RSS minus that of the same command over a bank of one entry, divided by N.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/firebreak/target}"
N="${N:-5000000}"
SEED="${SEED:-11}"
DATA="${DATA:-$CARGO_TARGET_DIR/bench-data/bank-$N}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p firebreak
  BIN="$CARGO_TARGET_DIR/release/firebreak"
fi

mkdir -p "$DATA"
CSV="$DATA/list.csv"
if [ ! -s "$CSV" ] || [ "$(cat "$DATA/csv.params" 2>/dev/null)" != "$N $SEED" ]; then
  python3 - "$CSV" "$N" "$SEED" <<'EOF'
import random, sys
path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
with open(path, "w") as f:
    f.write("hash,quality,id,labels\n")
    for i in range(n):
        f.write(f"{rng.getrandbits(256):064x},100,e{i},violent_extremism;gifct\n")
EOF
  echo "$N $SEED" > "$DATA/csv.params"
fi
QUERY=$(sed -n 2p "$CSV" | cut -d, -f1)

rm -rf "$DATA/fb" "$DATA/empty"
# The baseline: the same command over a bank of one entry.
head -2 "$CSV" > "$DATA/empty.csv"
"$BIN" --data-dir "$DATA/empty" lists import "$DATA/empty.csv" --format csv --bank big >/dev/null
/usr/bin/time -f '{"step": "import", "seconds": %e, "peak_rss_bytes": %M000}' \
  "$BIN" --data-dir "$DATA/fb" lists import "$CSV" --format csv --bank big >/dev/null 2>"$DATA/import.err" \
  || { cat "$DATA/import.err" >&2; exit 1; }
tail -1 "$DATA/import.err"

# Each command runs twice: the first builds the matcher from the banks and writes the
# matcher snapshot beside them; the second loads that snapshot (warm page cache) and
# times the first 1,000 queries after loading.
"$BIN" --data-dir "$DATA/empty" match pdq "$QUERY" >/dev/null 2>&1
empty=$("$BIN" --data-dir "$DATA/empty" match pdq --stats --first-queries 1000 "$QUERY" 2>&1 >/dev/null | tail -1)
built=$("$BIN" --data-dir "$DATA/fb" match pdq --stats --first-queries 1000 "$QUERY" 2>&1 >"$DATA/match.out" | tail -1)
grep -q '"entry_id":"e0"' "$DATA/match.out" || { echo "bank_load: the first entry was not found" >&2; exit 1; }
full=$("$BIN" --data-dir "$DATA/fb" match pdq --stats --first-queries 1000 "$QUERY" 2>&1 >"$DATA/match.out" | tail -1)
grep -q '"entry_id":"e0"' "$DATA/match.out" || { echo "bank_load: the first entry was not found from the snapshot" >&2; exit 1; }
ls -l "$DATA/fb/banks/"
echo "$empty" | sed 's/^{/{"step": "match pdq, one-entry bank, from its snapshot", /'
echo "$built" | sed 's/^{/{"step": "match pdq, built from the bank", /'
echo "$full" | sed 's/^{/{"step": "match pdq, from the snapshot", /'
python3 - "$empty" "$built" "$full" "$N" <<'EOF'
import json, sys
empty, built, full = (json.loads(a) for a in sys.argv[1:4])
n = int(sys.argv[4])
assert built["source"] == "built" and full["source"] == "snapshot", (built, full)
q = full["first_queries"]
per = lambda r, key: (r[key] - empty[key]) / n
print(f"entries {full['pdq']}: built from the bank in {built['load_seconds']:.2f} s "
      f"({per(built, 'rss_bytes'):.0f} B/entry resident, {per(built, 'peak_rss_bytes'):.0f} at the peak); "
      f"from the snapshot in {full['load_seconds']:.2f} s "
      f"({per(full, 'rss_bytes'):.0f} B/entry resident, {per(full, 'peak_rss_bytes'):.0f} at the peak); "
      f"first {q['count']} queries after loading: p50 {q['p50_us']:.0f} us, "
      f"p99 {q['p99_us']:.0f} us, max {q['max_us']:.0f} us "
      f"(after building: p50 {built['first_queries']['p50_us']:.0f} us, "
      f"p99 {built['first_queries']['p99_us']:.0f} us)")
EOF
