#!/usr/bin/env bash
# Memory under stream churn (issue 15), at the issue's scale: ROUNDS rounds of STREAMS
# concurrent pushed streams of SECONDS s of 720p30 (new ids each round), each pushed as
# fast as the decoder takes it and then ended; prints the daemon's resident memory once
# every stream of the round has ended. Loopback only; the daemon is stopped at the end.
#
#   scripts/churn-measure.sh [FIREBREAK_BINARY]   (env: ROUNDS=7 STREAMS=16 CLIP_SECONDS=60)
set -euo pipefail
FB=${1:-firebreak}
ROUNDS=${ROUNDS:-7}
STREAMS=${STREAMS:-16}
CLIP_SECONDS=${CLIP_SECONDS:-60}
TOKEN=churn-measure-token
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

ffmpeg -v error -y -f lavfi -t "$CLIP_SECONDS" -i testsrc2=size=1280x720:rate=30 \
  -c:v libx264 -preset ultrafast -g 60 -pix_fmt yuv420p -f mpegts "$WORK/clip.ts"
split -b 1048576 -d -a 4 "$WORK/clip.ts" "$WORK/seg."
SHA=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
cat >"$WORK/firebreak.toml" <<EOF
data_dir = "$WORK/data"
worker_id = "churn"
[[auth.tokens]]
tenant = "platform"
token_sha256 = "$SHA"
scopes = ["ingest", "read"]
[server]
listen = "127.0.0.1:0"
max_streams = $((STREAMS * 4))
tenant_requests_per_sec = 5000
tenant_request_burst = 5000
[ingest]
sampling = "2/s"
EOF
"$FB" run --config "$WORK/firebreak.toml" >"$WORK/out.log" 2>"$WORK/err.log" &
PID=$!
for _ in $(seq 100); do
  BASE=$(grep -o 'http://127.0.0.1:[0-9]*' "$WORK/out.log" | head -1 || true)
  [ -n "$BASE" ] && break
  sleep 0.1
done
[ -n "$BASE" ] || { echo "the daemon did not start:" >&2; cat "$WORK/err.log" >&2; exit 1; }

push() { # id
  local i=0 p
  for p in "$WORK"/seg.*; do
    curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $TOKEN" --data-binary @"$p" \
      "$BASE/v1/streams/$1/segments/$i"
    i=$((i + 1))
  done
  curl -sf -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" "$BASE/v1/streams/$1/end"
}
export -f push
export WORK TOKEN BASE
all_ended() {
  curl -sf -H "Authorization: Bearer $TOKEN" "$BASE/v1/streams" | python3 -c \
    'import json, sys; sys.exit(0 if all(s["state"] == "ended" for s in json.load(sys.stdin)["streams"]) else 1)'
}
echo "start: $(grep VmRSS "/proc/$PID/status")"
for r in $(seq 0 $((ROUNDS - 1))); do
  seq 0 $((STREAMS - 1)) | xargs -P "$STREAMS" -I{} bash -c "push r$r-s{}"
  until all_ended; do sleep 1; done
  echo "round $r: $(grep VmRSS "/proc/$PID/status")"
done
