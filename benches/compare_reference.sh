#!/usr/bin/env bash
# Firebreak vs Meta's reference, side by side in one run, on the same pixels and video.
# Reference: PyPI pdqhash 0.2.8 (PDQ C++) and vpdq 0.2.5 (vPDQ C++, built against the
# system FFmpeg), installed into a virtualenv outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/firebreak/target}"
VENV=/var/cache/firebreak/refvenv
if ! "$VENV/bin/python" -c "import pdqhash, vpdq, numpy" 2>/dev/null; then
  apt_missing=$(for p in python3-venv python3-dev cmake; do dpkg-query -W -f='${Status}' $p 2>/dev/null | grep -q "ok installed" || echo $p; done)
  if [ -n "$apt_missing" ]; then apt-get install -y -qq $apt_missing >/dev/null; fi
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy pdqhash==0.2.8 vpdq==0.2.5
fi
cargo build --release -q -p firebreak -p firebreak-benches
exec "$VENV/bin/python" benches/compare_reference.py "$CARGO_TARGET_DIR"
