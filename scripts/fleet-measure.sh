#!/usr/bin/env bash
# Fleet-mode measurements against a local tansu broker and real worker processes
# (figures printed as "MEASURE ..." lines; nothing is asserted about time):
# push-hook latency with acks=all (p50/p99) and throughput through one worker, and
# the rebalance time after SIGKILL and after a graceful stop (p50/p99 over
# FLEET_ROUNDS rounds each, default 3), and the end-to-end latency through two workers
# (hook accepted -> escalation acked by the broker; FLEET_E2E_STREAMS streams, default 8).
#   FLEET_ROUNDS=5 FLEET_PUSHES=1000 scripts/fleet-measure.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock /tmp/cargo.lock cargo test -p firebreak --test fleet -- --ignored --nocapture measure_fleet 2>&1 | grep -E "^MEASURE|test result|panicked"
