#!/usr/bin/env bash
# Validates deploy/ (Kubernetes schemas, the Compose Specification, every mounted
# firebreak.toml through `firebreak config check`, Prometheus rules) without a cluster or
# a Docker engine. The validators come from the lint virtualenv scripts/setup.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${OPENAPI_VENV:-/var/cache/firebreak/openapi-venv}
cargo build -q -p firebreak --bin firebreak
exec "$VENV/bin/python" scripts/check-deploy.py "${CARGO_TARGET_DIR:-/var/cache/firebreak/target}/debug/firebreak"
