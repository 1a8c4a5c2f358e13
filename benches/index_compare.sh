#!/usr/bin/env bash
# Firebreak's exact PDQ Hamming-range index vs FAISS (faiss-cpu from PyPI), side by side in one
# run, on the same clustered corpus, queries and ground truth. Everything single-threaded except
# ground-truth generation. See benches/index_compare.py for the data model and FAISS details.
#
# Environment:
#   N=10000000      stored hashes (N=100000 for a quick run)
#   Q=1000          queries
#   SEED=7          generator seed
#   DISTANCE=31     inclusive Hamming radius
#   REFVENV=...     Python venv with numpy + faiss-cpu (default /var/cache/firebreak/refvenv)
#   DATA=...        data dir (default $CARGO_TARGET_DIR/bench-data/index-$N)
#   BUILD_THREADS=1 threads for Firebreak's index build (FAISS's hash-index add is single-threaded)
#   SKIP_FIREBREAK=1  skip the cargo step (FAISS side and table only)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/firebreak/target}"
N="${N:-10000000}"
Q="${Q:-1000}"
SEED="${SEED:-7}"
DISTANCE="${DISTANCE:-31}"
BUILD_THREADS="${BUILD_THREADS:-1}"
VENV="${REFVENV:-/var/cache/firebreak/refvenv}"
DATA="${DATA:-$CARGO_TARGET_DIR/bench-data/index-$N}"
PY="$VENV/bin/python"
SCRIPT=benches/index_compare.py

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
if ! "$PY" -c "import numpy" 2>/dev/null; then
  "$VENV/bin/pip" install -q numpy
fi
if ! "$PY" -c "import faiss" 2>/dev/null; then
  "$VENV/bin/pip" install -q faiss-cpu
fi

mkdir -p "$DATA"
# Reuse the corpus only if params.json says it was made with this N, Q and seed.
if [ -s "$DATA/hashes.bin" ] && [ -s "$DATA/queries.bin" ] && "$PY" -c '
import json, sys
p = json.load(open(sys.argv[1]))
sys.exit([p["n"], p["queries"], p["seed"]] != [int(x) for x in sys.argv[2:]])' \
     "$DATA/params.json" "$N" "$Q" "$SEED" 2>/dev/null; then
  echo "== gen: reusing $DATA/hashes.bin, $DATA/queries.bin" >&2
else
  echo "== gen: N=$N Q=$Q seed=$SEED -> $DATA" >&2
  rm -f "$DATA/truth.txt" "$DATA/truth.json"
  "$PY" "$SCRIPT" gen --out "$DATA" --n "$N" --queries "$Q" --seed "$SEED"
fi

# truth.txt is only reused if truth.json says it was made for this distance.
if [ -s "$DATA/truth.txt" ] && "$PY" -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["distance"] != int(sys.argv[2]))' \
     "$DATA/truth.json" "$DISTANCE" 2>/dev/null; then
  echo "== truth: reusing $DATA/truth.txt" >&2
else
  echo "== truth: FAISS IndexBinaryFlat, distance <= $DISTANCE (all threads)" >&2
  "$PY" "$SCRIPT" truth --dir "$DATA" --distance "$DISTANCE"
fi

FB_JSON="$DATA/firebreak.json"
if [ "${SKIP_FIREBREAK:-0}" = 1 ]; then
  echo "== firebreak: skipped (SKIP_FIREBREAK=1)" >&2
  rm -f "$FB_JSON"
else
  echo "== firebreak: index_bench" >&2
  cargo run --release -q -p firebreak-benches --bin index_bench -- \
    --hashes "$DATA/hashes.bin" --queries "$DATA/queries.bin" --truth "$DATA/truth.txt" \
    --distance "$DISTANCE" --threads "$BUILD_THREADS" > "$FB_JSON"
  cat "$FB_JSON" >&2
fi

echo "== faiss: one thread" >&2
"$PY" "$SCRIPT" faiss --dir "$DATA" --distance "$DISTANCE" > "$DATA/faiss.json"

"$PY" "$SCRIPT" report --faiss "$DATA/faiss.json" --firebreak "$FB_JSON"
