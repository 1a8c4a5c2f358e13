#!/usr/bin/env bash
# Runs `firebreak eval` over a set for every bank source, before and after each lever;
# one JSON-lines file per run in SET/results/, then a table (table.py).
#
#   scripts/robustness/run.sh SET_DIR [FIREBREAK_BINARY]
set -euo pipefail
SET=${1:?usage: run.sh SET_DIR [FIREBREAK]}
FB=${2:-firebreak}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$SET/results"
run() { # name, eval args...
  local name=$1; shift
  echo "== $name: $*" >&2
  "$FB" eval --set "$SET" "$@" >"$SET/results/$name.jsonl" 2>"$SET/results/$name.err"
}
ALL=dihedral,bars,centre60,mask50
# Before the masked views (session 10's levers): bank and query views without them.
OLD_BANK=trimmed,centre90,centre80,centre60,tl85,tr85,bl85,br85
OLD_QUERY=dihedral,bars,centre60
run hashlist-plain        --source hash-list --query-views none
run hashlist-dihedral     --source hash-list --query-views dihedral
run hashlist-dihedral-bars --source hash-list --query-views dihedral,bars
run hashlist-all          --source hash-list --query-views $ALL --frames
run confirmed-plain       --source confirmed --query-views none
run confirmed-all         --source confirmed --query-views $ALL
run addvideo-dense        --source add-video --bank-views none --query-views none
run addvideo-dense-query  --source add-video --bank-views none --query-views $ALL
run addvideo-views        --source add-video --query-views none
run addvideo-views-bars   --source add-video --query-views bars
run addvideo-nomask       --source add-video --bank-views $OLD_BANK --query-views $OLD_QUERY
run addvideo-all          --source add-video --query-views $ALL --frames
python3 "$HERE/table.py" "$SET/results"
