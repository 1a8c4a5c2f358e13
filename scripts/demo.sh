#!/usr/bin/env bash
# The live demo (`make run`): a known "crisis clip" is hashed into a `crisis` bank, then
# a live HLS stream (background, the clip re-encoded smaller at a low bitrate, background
# again) is pushed in real time and served over HTTP; `firebreak run` monitors it and its
# escalation events are printed as they arrive. Needs only ffmpeg, python3 and firebreak.
#
# Environment:
#   FIREBREAK_BIN   the binary (default $CARGO_TARGET_DIR/release/firebreak)
#   CARGO_TARGET_DIR  default /var/cache/firebreak/target; the work dir is its demo/
#   DEMO_DIR        the work dir (recreated on every run)
#   DEMO_PORT       the daemon's port (default 8080; a free one if that is busy)
#   DEMO_TAIL       seconds to keep monitoring after the programme ends, at most
#                   (default 15; the demo stops as soon as the incident has ended)
#
# Exit status: 0 if an escalation to tier `crisis` was seen, else 1.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${CARGO_TARGET_DIR:-/var/cache/firebreak/target}"
BIN="${FIREBREAK_BIN:-$TARGET/release/firebreak}"
WORK="${DEMO_DIR:-$TARGET/demo}"
TOKEN="demo-operator-token"
STREAM_ID="demo-live"
BG_BEFORE=8   # seconds of background before the clip
CLIP_SECS=12  # the clip's length
BG_AFTER=20   # seconds of background after it
TAIL="${DEMO_TAIL:-15}"
PROGRAMME_SECS=$((BG_BEFORE + CLIP_SECS + BG_AFTER))

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
now() { date +%s.%N; }

command -v ffmpeg >/dev/null || die "ffmpeg is not installed (scripts/setup.sh installs it)"
command -v python3 >/dev/null || die "python3 is not installed"
for _ in $(seq 30); do [ -x "$BIN" ] && break; sleep 1; done
[ -x "$BIN" ] || die "no firebreak binary at $BIN (build it, or set FIREBREAK_BIN)"

# The event printer: `follow EVENTS CLIP_WALL PUSH_WALL` prints one line per event as the
# JSONL sink appends it; `summary EVENTS CLIP_WALL` prints the totals and exits 0 if an
# escalation to tier crisis is in the file.
read -r -d '' EVENTS_PY <<'PY' || true
import datetime, json, os, sys, time

def wall(ev):
    t = ev.get("data", {}).get("wall_time") or ev.get("time")
    try:
        return datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return time.time()

def evidence(items):
    groups = {}
    for e in items or []:
        groups.setdefault((e.get("type"), e.get("bank")), []).append(e)
    out = []
    for (kind, bank), es in groups.items():
        ts = sorted({e["media_time"] for e in es if isinstance(e.get("media_time"), (int, float))})
        span = f" at media {ts[0]:.1f}-{ts[-1]:.1f}s" if ts else ""
        entries = len({e.get("entry_id") for e in es})
        if kind == "hash_match":
            d = min(e.get("distance", 256) for e in es)
            out.append(f"{len(ts)} frame(s) matching {entries} {bank} hash(es), "
                       f"best distance {d}{span}")
        elif kind == "video_match":
            best = max(es, key=lambda e: e.get("percent", 0))
            out.append(f"video {bank}/{best.get('entry_id')} up to "
                       f"{best.get('percent', 0):.0f}% of the window{span}")
        else:
            out.append(f"{len(es)} {kind}{span}")
    return "; ".join(out) or "none"

def line(ev, clip_wall, push_wall):
    d = ev.get("data", {})
    kind, tier = d.get("kind", "?"), d.get("tier", "?")
    w = wall(ev)
    s = (f"[stream +{w - push_wall:.1f}s] {kind.upper()} {d.get('previous_tier', '?')} -> {tier}"
         f"  stream={d.get('stream_id')} incident={d.get('incident_id')}"
         f"  rules={','.join(d.get('rules') or []) or '-'}")
    if kind in ("escalated", "updated"):
        s += f"  evidence: {evidence(d.get('evidence'))}"
    if kind == "escalated":
        if w >= clip_wall:
            s += f"  => {w - clip_wall:.1f}s after the clip appeared (approx.)"
        else:
            s += f"  => {clip_wall - w:.1f}s BEFORE the clip appeared"
    return s

def follow(path, clip_wall, push_wall):
    while not os.path.exists(path):
        time.sleep(0.2)
    buf = ""
    with open(path, encoding="utf-8") as f:
        while True:
            chunk = f.readline()
            if not chunk:
                time.sleep(0.2)
                continue
            buf += chunk
            if not buf.endswith("\n"):
                continue
            text, buf = buf.strip(), ""
            if not text:
                continue
            try:
                ev = json.loads(text)
            except ValueError:
                print(f"[event] unparsable line: {text[:200]}", flush=True)
                continue
            print(line(ev, clip_wall, push_wall), flush=True)

def summary(path, clip_wall):
    events = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for text in f:
                try:
                    events.append(json.loads(text))
                except ValueError:
                    pass
    kinds = {}
    for ev in events:
        k = ev.get("data", {}).get("kind", "?")
        kinds[k] = kinds.get(k, 0) + 1
    crisis = [ev for ev in events
              if ev.get("data", {}).get("kind") in ("escalated", "updated")
              and ev.get("data", {}).get("tier") == "crisis"]
    by_kind = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
    print(f"escalation events: {len(events)} ({by_kind})")
    print(f"events file: {path}")
    if crisis:
        first = min(wall(ev) for ev in crisis)
        print(f"first crisis escalation: {first - clip_wall:.1f}s after the clip appeared "
              f"in the live stream (approx.)")
        return 0
    print("NO escalation to tier crisis was seen: the monitor did not catch the clip")
    return 1

if sys.argv[1] == "follow":
    try:
        follow(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    except KeyboardInterrupt:
        pass
else:
    sys.exit(summary(sys.argv[2], float(sys.argv[3])))
PY

# Is 127.0.0.1:PORT free to listen on?
port_free() {
  python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}
free_port() {
  python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------
# Processes, and the clean-up that stops them.
FFMPEG_PID="" HTTP_PID="" FB_PID="" FOLLOW_PID=""
LIVE_PHASE=0
CLIP_WALL=0

stop() { # PID [SECONDS]: SIGTERM, wait up to SECONDS, then SIGKILL
  local pid="$1" limit="${2:-5}" i=0
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt $((limit * 10)) ]; do
    sleep 0.1
    i=$((i + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "demo: pid $pid did not stop within ${limit}s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop "$FFMPEG_PID" 5
  if [ -n "$FB_PID" ]; then
    say "== stopping firebreak (SIGTERM, graceful shutdown)"
    kill -TERM "$FB_PID" 2>/dev/null
    local i=0
    while kill -0 "$FB_PID" 2>/dev/null && [ "$i" -lt 300 ]; do
      sleep 0.1
      i=$((i + 1))
    done
    if kill -0 "$FB_PID" 2>/dev/null; then
      say "demo: firebreak did not exit within 30s of SIGTERM; killing it" >&2
      kill -KILL "$FB_PID" 2>/dev/null
    fi
    wait "$FB_PID" 2>/dev/null
    local fb_rc=$?
    [ "$fb_rc" -eq 0 ] || say "demo: firebreak exited with status $fb_rc" >&2
  fi
  sleep 0.5 # let the printer catch the last events
  stop "$FOLLOW_PID" 2
  stop "$HTTP_PID" 2
  if [ -s "$WORK/firebreak.err" ]; then
    say "== firebreak stderr ($WORK/firebreak.err, last 20 lines):"
    tail -n 20 "$WORK/firebreak.err"
  fi
  if [ "$LIVE_PHASE" = 1 ]; then
    say "== summary"
    python3 -c "$EVENTS_PY" summary "$EVENTS" "$CLIP_WALL"
    rc=$?
  fi
  exit "$rc"
}
trap finish EXIT
trap 'say ""; say "== interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------------------
say "== preparing $WORK"
case "$WORK" in /*) ;; *) WORK="$PWD/$WORK" ;; esac
rm -rf "$WORK"
mkdir -p "$WORK/live"
DATA="$WORK/data"
EVENTS="$DATA/events.jsonl"
LIVE="$WORK/live"

say "-- the known crisis clip: ${CLIP_SECS}s of mandelbrot, 640x360, 25 fps, H.264 -> clip.mp4"
ff -f lavfi -i "mandelbrot=size=640x360:rate=25" -t "$CLIP_SECS" \
  -c:v libx264 -preset veryfast -g 50 -pix_fmt yuv420p "$WORK/clip.mp4"

say "-- the background: testsrc2 with scrolling text -> background.mp4"
BG_SECS=$((BG_BEFORE + BG_AFTER))
BG_SRC="testsrc2=size=640x360:rate=25:duration=$BG_SECS"
TEXT="drawtext=text='BACKGROUND PROGRAMME':fontcolor=white:fontsize=32:box=1"
TEXT="$TEXT:boxcolor=black@0.6:boxborderw=8:x=w-mod(t*140\\,w+tw):y=h-70"
if ! ff -f lavfi -i "$BG_SRC" -vf "$TEXT" -c:v libx264 -preset veryfast -g 50 \
  -pix_fmt yuv420p "$WORK/background.mp4" 2>/dev/null; then
  say "   (drawtext unavailable: plain testsrc2)"
  ff -f lavfi -i "$BG_SRC" -c:v libx264 -preset veryfast -g 50 -pix_fmt yuv420p \
    "$WORK/background.mp4"
fi

say "-- the programme: ${BG_BEFORE}s background, the clip at 480x270 ~350 kb/s, ${BG_AFTER}s background -> programme.mp4"
ff -t "$BG_BEFORE" -i "$WORK/background.mp4" -i "$WORK/clip.mp4" \
  -ss "$BG_BEFORE" -i "$WORK/background.mp4" \
  -filter_complex "[0:v]scale=480:270,setsar=1,fps=25[a];[1:v]scale=480:270,setsar=1,fps=25[b];[2:v]scale=480:270,setsar=1,fps=25[c];[a][b][c]concat=n=3:v=1:a=0[v]" \
  -map "[v]" -c:v libx264 -preset veryfast -b:v 350k -maxrate 400k -bufsize 800k \
  -g 50 -keyint_min 50 -sc_threshold 0 -pix_fmt yuv420p -an "$WORK/programme.mp4"

# The bank gets the clip twice: as one vPDQ video (the live window's `known-video-live`
# rule, which needs a few seconds of the clip on air) and as its frames' PDQ hashes
# (`crisis-bank-match`, which fires on the first matching frame).
say "-- hashing the clip (vPDQ, one frame per second) and importing it into bank 'crisis'"
"$BIN" hash vpdq "$WORK/clip.mp4" -r 1 >"$WORK/clip.vpdq"
say "   $(wc -l <"$WORK/clip.vpdq") frame hashes -> $WORK/clip.vpdq"
"$BIN" --data-dir "$DATA" lists import "$WORK/clip.vpdq" --format vpdq --bank crisis \
  --id known-crisis-clip | sed 's/^/   /'
awk -F, '{print "pdq " $3}' "$WORK/clip.vpdq" >"$WORK/clip-frames.list"
"$BIN" --data-dir "$DATA" lists import "$WORK/clip-frames.list" --format local-file \
  --bank crisis | sed 's/^/   /'

# Ports: the HLS origin, and the daemon.
HLS_PORT="$(free_port)"
PORT="${DEMO_PORT:-8080}"
if ! port_free "$PORT"; then
  NEW_PORT="$(free_port)"
  say "-- port $PORT is busy; the daemon will listen on $NEW_PORT"
  PORT="$NEW_PORT"
fi

TOKEN_SHA256="$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)"
CONFIG="$WORK/firebreak.toml"
cat >"$CONFIG" <<EOF
# Written by scripts/demo.sh.
data_dir = "$DATA"

[server]
listen = "127.0.0.1:$PORT"

[log]
level = "warn"

[[auth.tokens]]
tenant = "demo"
token_sha256 = "$TOKEN_SHA256" # sha256 of "$TOKEN"
scopes = ["operator", "read", "ingest"]

[sink]
kind = "jsonl"

[[streams]]
id = "$STREAM_ID"
hls = "http://127.0.0.1:$HLS_PORT/live.m3u8"
sampling = "2/s"
EOF
say "-- config $CONFIG"
"$BIN" config check "$CONFIG" | sed 's/^/   /'

# ---------------------------------------------------------------------------------------
say "== starting the HLS origin on http://127.0.0.1:$HLS_PORT/ (python3 http.server)"
python3 -m http.server --bind 127.0.0.1 --directory "$LIVE" "$HLS_PORT" \
  >"$WORK/http.log" 2>&1 &
HTTP_PID=$!

say "== starting firebreak run (stdout: $WORK/firebreak.out, stderr: $WORK/firebreak.err)"
"$BIN" run --config "$CONFIG" >"$WORK/firebreak.out" 2>"$WORK/firebreak.err" &
FB_PID=$!
ADDR=""
for _ in $(seq 600); do
  ADDR="$(sed -n 's|^listening on http://||p' "$WORK/firebreak.out" | head -n 1)"
  [ -n "$ADDR" ] && break
  if ! kill -0 "$FB_PID" 2>/dev/null; then
    cat "$WORK/firebreak.err" >&2
    FB_PID=""
    die "firebreak exited before listening (stderr above)"
  fi
  sleep 0.1
done
[ -n "$ADDR" ] || die "firebreak did not report 'listening on' within 60s"

say ""
say "   dashboard:  http://$ADDR/#token=$TOKEN"
say "   API token:  $TOKEN  (e.g. curl -H 'Authorization: Bearer $TOKEN' http://$ADDR/v1/escalations)"
say "   stream:     $STREAM_ID <- http://127.0.0.1:$HLS_PORT/live.m3u8"
say "   events:     $EVENTS"
say ""

say "== going live: ${PROGRAMME_SECS}s programme; the clip appears at ${BG_BEFORE}s and runs ${CLIP_SECS}s"
PUSH_WALL="$(now)"
PUSH_SECONDS=$SECONDS
ffmpeg -nostdin -hide_banner -loglevel error -re -i "$WORK/programme.mp4" -c copy \
  -f hls -hls_time 2 -hls_list_size 6 -hls_flags delete_segments+independent_segments \
  -hls_segment_filename "$LIVE/seg%05d.ts" "$LIVE/live.m3u8" 2>"$WORK/ffmpeg.err" &
FFMPEG_PID=$!
CLIP_WALL="$(python3 -c "import sys; print(float(sys.argv[1]) + $BG_BEFORE)" "$PUSH_WALL")"
LIVE_PHASE=1

python3 -u -c "$EVENTS_PY" follow "$EVENTS" "$CLIP_WALL" "$PUSH_WALL" &
FOLLOW_PID=$!

# The timeline, while the programme plays.
elapsed() { echo $((SECONDS - PUSH_SECONDS)); }
said_clip=0 said_after=0
while kill -0 "$FFMPEG_PID" 2>/dev/null; do
  t="$(elapsed)"
  if [ "$said_clip" = 0 ] && [ "$t" -ge "$BG_BEFORE" ]; then
    say "[stream +${t}s] >>> the known clip is now on air (480x270, re-encoded)"
    said_clip=1
  fi
  if [ "$said_after" = 0 ] && [ "$t" -ge $((BG_BEFORE + CLIP_SECS)) ]; then
    say "[stream +${t}s] >>> the clip is over; background again"
    said_after=1
  fi
  sleep 0.25
done
push_rc=0
wait "$FFMPEG_PID" || push_rc=$?
FFMPEG_PID=""
if [ "$push_rc" -ne 0 ]; then
  cat "$WORK/ffmpeg.err" >&2
  say "demo: the HLS push (ffmpeg) exited with status $push_rc" >&2
fi
say "[stream +$(elapsed)s] >>> programme over (playlist ended); monitoring ${TAIL}s more (Ctrl-C to stop)"
for _ in $(seq $((TAIL * 4))); do
  if ! kill -0 "$FB_PID" 2>/dev/null; then
    say "demo: firebreak exited by itself" >&2
    break
  fi
  if grep -q '"kind":"ended"' "$EVENTS" 2>/dev/null; then
    sleep 1
    say "[stream +$(elapsed)s] >>> the incident is closed"
    break
  fi
  sleep 0.25
done
