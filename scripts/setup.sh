#!/usr/bin/env bash
# One-time set-up, safe to re-run: a virtual environment in .venv with torch and the pack's
# dependencies, and a real ComfyUI 0.3.75 in .comfyui (unless COMFYUI_PATH names one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.hspace-deps
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ] ||
   [ scripts/setup.sh -nt "$stamp" ]; then
  echo "setup: installing torch and the pack's dependencies into .venv (log: .venv/pip.log)"
  if ! { .venv/bin/pip install --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 &&
         .venv/bin/pip install --disable-pip-version-check -r requirements-dev.txt; } > .venv/pip.log 2>&1; then
    tail -40 .venv/pip.log
    exit 1
  fi
  touch "$stamp"
fi
.venv/bin/python scripts/provision_comfyui.py
# Debian's chromium for the browser test (tests/test_browser.py): from the machine's apt cache
# when its packages are there, else from the Debian mirror.
if ! command -v chromium > /dev/null; then
  echo "setup: installing Debian's chromium (log: .venv/apt.log)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  cached=$(ls /var/cache/apt/archives/chromium_*_amd64.deb /var/cache/apt/archives/chromium-common_*_amd64.deb 2>/dev/null || true)
  if ! { { [ -n "$cached" ] && $sudo apt-get install -y --no-install-recommends --no-download $cached; } ||
         { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends chromium; }; } > .venv/apt.log 2>&1; then
    tail -20 .venv/apt.log
    echo "setup: could not install chromium; the browser test needs it" >&2
    exit 1
  fi
fi
