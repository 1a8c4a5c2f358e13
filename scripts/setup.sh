#!/usr/bin/env bash
# Installs what Firebreak needs on Debian 12, and nothing when it is all there already.
set -euo pipefail

APT_PACKAGES=(pkg-config clang libclang-dev ffmpeg libavcodec-dev libavformat-dev libavutil-dev
  libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev
  chromium chromium-driver prometheus python3-pip python3-venv)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
    rustup component add "$c"
  fi
done

# cargo-deny checks licences, bans and sources (`make lint`, deny.toml).
CARGO_DENY_VERSION=0.20.2
if [ "$(cargo deny --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DENY_VERSION" ]; then
  echo "setup: installing cargo-deny $CARGO_DENY_VERSION" >&2
  cargo install --quiet --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi

# The lint validators (`make lint`), from a virtualenv of their own (about 20 s and 80 MB,
# once): openapi-spec-validator checks the HTTP API's OpenAPI document; check-jsonschema
# (with its vendored Compose Specification schema) and kubernetes-validate (bundled
# Kubernetes schemas, no cluster) check deploy/ (scripts/check-deploy.sh).
OPENAPI_VENV=${OPENAPI_VENV:-/var/cache/firebreak/openapi-venv}
LINT_PACKAGES=(openapi-spec-validator==0.9.0 check-jsonschema==0.39.0 kubernetes-validate==1.37.0)
LINT_STAMP="$OPENAPI_VENV/.installed-$(printf '%s+' "${LINT_PACKAGES[@]}")"
if [ ! -f "$LINT_STAMP" ]; then
  echo "setup: installing ${LINT_PACKAGES[*]} into $OPENAPI_VENV" >&2
  python3 -m venv --clear "$OPENAPI_VENV"
  "$OPENAPI_VENV/bin/pip" install --quiet --disable-pip-version-check "${LINT_PACKAGES[@]}"
  touch "$LINT_STAMP"
fi

# The Kafka-protocol broker the delivery tests start (tansu 0.6.0, pinned by sha256).
"$(dirname "$0")/tansu.sh" install >/dev/null
