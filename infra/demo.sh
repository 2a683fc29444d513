#!/usr/bin/env bash
# First use installs everything; then runs `avatarflow demo` (produce on the sample manifest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
exec .venv/bin/avatarflow demo "$@"
