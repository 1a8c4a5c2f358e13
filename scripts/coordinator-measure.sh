#!/usr/bin/env bash
# Coordinator measurements against a local tansu broker, two worker processes and one
# coordinator (figures printed as "MEASURE ..." lines; nothing is asserted about time):
# confirm-to-fleet latency over CONFIRM_ROUNDS confirmations (default 10): the time the
# confirm request takes, and the time until both workers applied every entry.
#   CONFIRM_ROUNDS=20 scripts/coordinator-measure.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock /tmp/cargo.lock cargo test -p firebreak --test coordinator -- --ignored --nocapture measure_confirm_to_fleet 2>&1 | grep -E "^MEASURE|test result|panicked"
