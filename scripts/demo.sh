#!/usr/bin/env bash
# The embedded demo (until the daemon lands): makes sample media with the ffmpeg CLI,
# hashes it with Firebreak, and shows that a re-encoded, rescaled copy of a clip matches
# while unrelated content does not.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-/var/cache/firebreak/target}/release/firebreak"
DEMO=.demo
mkdir -p "$DEMO"

ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
if [ ! -s "$DEMO/clip.mp4" ]; then
  echo "== making sample media in $DEMO/"
  # The "known clip": 8 s of a synthetic pattern, H.264, 2 s GOP.
  ff -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=8" -c:v libx264 -preset veryfast \
    -g 60 -pix_fmt yuv420p "$DEMO/clip.mp4"
  # A re-upload: scaled down, re-encoded at a low bitrate.
  ff -i "$DEMO/clip.mp4" -vf scale=640:360 -c:v libx264 -b:v 300k -pix_fmt yuv420p \
    "$DEMO/reupload.mp4"
  # Unrelated content.
  ff -f lavfi -i "mandelbrot=size=640x360:rate=30" -t 8 -c:v libx264 -preset veryfast \
    -pix_fmt yuv420p "$DEMO/unrelated.mp4"
  # Two stills: a frame of the clip, and the same frame mirrored.
  ff -ss 2 -i "$DEMO/clip.mp4" -frames:v 1 "$DEMO/frame.png"
  ff -i "$DEMO/frame.png" -vf hflip "$DEMO/frame-mirrored.png"
fi

echo "== PDQ of two stills (hash,quality,path), then the dihedral hashes of the first"
"$BIN" hash pdq "$DEMO/frame.png" "$DEMO/frame-mirrored.png"
"$BIN" hash pdq --dihedral "$DEMO/frame.png" | tr ',' '\n' | paste <(printf '%s\n' original rot90 rot180 rot270 flipx flipy flipplus1 flipminus1 quality path) -

echo "== vPDQ, one hash per second"
for v in clip reupload unrelated; do
  "$BIN" hash vpdq --seconds-per-hash 1 "$DEMO/$v.mp4" >"$DEMO/$v.vpdq.txt"
  echo "$v: $(wc -l <"$DEMO/$v.vpdq.txt") frame hashes -> $DEMO/$v.vpdq.txt"
done
head -3 "$DEMO/clip.vpdq.txt"

echo "== re-upload vs known clip"
"$BIN" compare vpdq "$DEMO/reupload.vpdq.txt" "$DEMO/clip.vpdq.txt"
echo "== unrelated vs known clip"
"$BIN" compare vpdq "$DEMO/unrelated.vpdq.txt" "$DEMO/clip.vpdq.txt"

echo "== banks: the clip's vPDQ and its frame's PDQ into a crisis bank, then match"
export FIREBREAK_DATA="$DEMO/data"
rm -rf "$FIREBREAK_DATA"
"$BIN" lists import "$DEMO/clip.vpdq.txt" --format vpdq --bank crisis --id known-clip
"$BIN" hash pdq "$DEMO/frame.png" | awk -F, '{print "pdq " $1}' >"$DEMO/frame.list"
"$BIN" lists import "$DEMO/frame.list" --format local-file --bank crisis
"$BIN" lists stats
echo "-- match vpdq: the re-upload (expect known-clip, is_match true), then the unrelated video"
"$BIN" match vpdq "$DEMO/reupload.mp4"
"$BIN" match vpdq "$DEMO/unrelated.mp4"
echo "-- match pdq: the frame, and its mirror (PDQ is not flip-invariant: no match expected)"
"$BIN" match pdq "$DEMO/frame.png" "$DEMO/frame-mirrored.png"
