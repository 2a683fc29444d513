#!/usr/bin/env bash
# Install everything avatarflow needs, once: Debian packages (espeak-ng, ffmpeg, Mesa EGL for
# Blender's Workbench, Chromium for the report test), then a virtual environment at .venv with
# the pinned Python packages.
# Re-running is cheap: each step is skipped when it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(espeak-ng libespeak-ng1 ffmpeg util-linux libegl1 libegl-mesa0 libgl1-mesa-dri libgl1
                 libglib2.0-0 libxrender1 libxi6 libxkbcommon0 libsm6 libxxf86vm1 libxfixes3 libx11-6
                 chromium)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
  echo "setup: installing python3-venv"  # Debian's Python ships venv/ensurepip separately
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv python3.11-venv >/dev/null
fi
stamp=".venv/.avatarflow-installed"
wanted="$(cat requirements.txt requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "setup: creating .venv and installing Python packages (first run takes several minutes)"
  .venv/bin/python -m pip --version >/dev/null 2>&1 || "$PYTHON" -m venv --clear .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # The lock pins every package (torch to its CPU build) so installs are reproducible.
  .venv/bin/python -m pip install -q -r requirements.txt -c requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$wanted" > "$stamp"
fi
