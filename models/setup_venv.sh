#!/usr/bin/env bash
# Creates (or updates) the virtualenv for the Python tools of models/: onnx, onnxruntime,
# numpy, pillow and tract, pinned in models/requirements.txt. Quick when up to date.
#
#   models/setup_venv.sh     prints the venv's python
#
# Environment: FIREBREAK_CACHE (default /var/cache/firebreak); the venv is
# $FIREBREAK_CACHE/modelvenv, outside the clone.
set -euo pipefail

MODELS_DIR=$(cd "$(dirname "$0")" && pwd)
REQ="$MODELS_DIR/requirements.txt"
VENV="${FIREBREAK_CACHE:-/var/cache/firebreak}/modelvenv"
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)

if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
command -v python3 >/dev/null || { echo "setup_venv.sh: error: python3 not found" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || {
    echo "setup_venv.sh: error: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
echo "setup_venv.sh: installing $REQ into $VENV" >&2
PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install --quiet --only-binary=:all: -r "$REQ" >&2
echo "$want" >"$STAMP"
echo "$VENV/bin/python"
