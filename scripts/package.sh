#!/usr/bin/env bash
# Release packaging: the binary ships without debug info; the debug info goes beside
# it in dist/, linked by a .gnu_debuglink so debuggers and symbolizers find it.
#   dist/firebreak        stripped of debug sections (symbols kept for backtraces)
#   dist/firebreak.debug  the debug sections left in the binary (C libraries, std)
#   dist/firebreak.dwp    the Rust crates' split debug info (profile.release)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-/var/cache/firebreak/target}"
cargo build --release --locked -p firebreak
rm -rf dist && mkdir -p dist
cp "$target/release/firebreak" dist/firebreak.full
objcopy --only-keep-debug dist/firebreak.full dist/firebreak.debug
objcopy --strip-debug --add-gnu-debuglink=dist/firebreak.debug dist/firebreak.full dist/firebreak
rm dist/firebreak.full
if [ -f "$target/release/firebreak.dwp" ]; then
  cp "$target/release/firebreak.dwp" dist/firebreak.dwp
fi
dist/firebreak --version >/dev/null
ls -l dist/
