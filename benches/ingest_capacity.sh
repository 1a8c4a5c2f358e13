#!/usr/bin/env bash
# Streams per core for live ingest (720p30 H.264, one decoder thread), next to the ffmpeg
# CLI's own single-threaded decode speed on the same file (the practical limit).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/firebreak/target}"
cargo build --release -q -p firebreak-benches --bin ingest_capacity
"$CARGO_TARGET_DIR/release/ingest_capacity"
VIDEO="$CARGO_TARGET_DIR/bench-media/testsrc2-720p30-60s.mp4"
for mode in full keyframes; do
  extra=()
  [ "$mode" = keyframes ] && extra=(-skip_frame nokey)
  start=$(date +%s.%N)
  ffmpeg -hide_banner -loglevel error -threads 1 "${extra[@]}" -i "$VIDEO" -f null -
  end=$(date +%s.%N)
  python3 -c "import sys; w=float(sys.argv[2])-float(sys.argv[1]); print('{\"mode\": \"ffmpeg-cli-%s\", \"wall_s\": %.3f, \"streams_per_core\": %.1f}' % (sys.argv[3], w, 60.0/w))" "$start" "$end" "$mode"
done
