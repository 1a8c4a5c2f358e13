#!/usr/bin/env bash
# The workspace's dependency rules, checked on `cargo tree` (CI runs this in `make lint`):
#   - firebreak-hashing has no required dependencies (its only optional one, `image`, is
#     behind the `decode` feature);
#   - only firebreak-media links FFmpeg, only firebreak-classify links tract, only
#     firebreak-delivery links librdkafka: every other production crate reaches them, if
#     at all, only through that crate;
#   - no production crate depends on the test-support crate or on tempfile.
# Production crates are the published ones; firebreak-testkit and firebreak-benches are
# test and measurement code and may link anything.
set -euo pipefail
cd "$(dirname "$0")/.."

PRODUCTION=(firebreak-hashing firebreak-matching firebreak-policy firebreak-coordinator
  firebreak-media firebreak-classify firebreak-delivery firebreak)
failed=0
fail() {
  echo "check-deps: $*" >&2
  failed=1
}

# Package names in a crate's normal (and build) dependency tree, one per line. Any
# failure of cargo tree stops the check (a plain assignment of this propagates it).
deps() {
  local crate=$1 out
  shift
  out=$(cargo tree --locked -p "$crate" -e normal,build --prefix none --format '{p}' "$@") || {
    echo "check-deps: cargo tree -p $crate $* failed" >&2
    exit 2
  }
  awk '{print $1}' <<<"$out" | sort -u
}

# Lines of $1 that match the extended regex $2 (nothing if none).
matching() { grep -E "$2" <<<"$1" || true; }

declare -A TREE
for crate in "${PRODUCTION[@]}"; do
  TREE[$crate]=$(deps "$crate")
done

# 1. hashing: nothing but itself, without and with its default features.
tree=${TREE[firebreak-hashing]}
bare=$(deps firebreak-hashing --no-default-features)
for t in "$tree" "$bare"; do
  others=$(grep -vx firebreak-hashing <<<"$t" || true)
  if [ -n "$others" ]; then
    fail "firebreak-hashing has required dependencies: $(echo $others)"
  fi
done

# 2. one crate per heavy native library: every other production crate's tree, with the
#    owner pruned, must not contain the library.
check_owner() {
  local owner=$1 pattern=$2 what=$3 crate pruned found
  for crate in "${PRODUCTION[@]}"; do
    [ "$crate" = "$owner" ] && continue
    if grep -qx "$owner" <<<"${TREE[$crate]}"; then
      pruned=$(deps "$crate" --prune "$owner")
    else
      pruned=${TREE[$crate]}
    fi
    found=$(matching "$pruned" "$pattern")
    if [ -n "$found" ]; then
      fail "$crate depends on $what other than through $owner: $(echo $found)"
    fi
  done
  if [ -z "$(matching "${TREE[$owner]}" "$pattern")" ]; then
    fail "$owner no longer links $what: update this check"
  fi
}
check_owner firebreak-media '^(ffmpeg-next|ffmpeg-sys-next)$' FFmpeg
check_owner firebreak-classify '^tract-' tract
check_owner firebreak-delivery '^(rdkafka|rdkafka-sys)$' librdkafka

# 3. test support stays out of production.
for crate in "${PRODUCTION[@]}"; do
  found=$(matching "${TREE[$crate]}" '^(firebreak-testkit|tempfile)$')
  if [ -n "$found" ]; then
    fail "$crate depends on test support: $(echo $found)"
  fi
done

if [ "$failed" != 0 ]; then
  exit 1
fi
echo "check-deps: ok (${#PRODUCTION[@]} production crates)"
