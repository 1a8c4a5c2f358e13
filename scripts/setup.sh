#!/usr/bin/env bash
# Installs what Firebreak needs on Debian 12, and nothing when it is all there already.
set -euo pipefail

APT_PACKAGES=(pkg-config clang libclang-dev ffmpeg libavcodec-dev libavformat-dev libavutil-dev
  libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev
  chromium chromium-driver prometheus python3-pip)

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

# The Kafka-protocol broker the delivery tests start (tansu 0.6.0, pinned by sha256).
"$(dirname "$0")/tansu.sh" install >/dev/null
