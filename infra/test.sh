#!/usr/bin/env bash
# First use installs everything; then runs the whole test suite (unit, stage and flow tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
exec .venv/bin/python -m pytest "$@"
